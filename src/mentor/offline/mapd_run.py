"""What the ``mentor mapd`` commands read (:class:`MapdConfig`) and the whole pipeline, mine to build, for
every ablation (:func:`run_pipeline`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mentor.config import check_at_most
from mentor.offline.mapd import ABLATIONS, build, check_problems, explain, mine, rationales, review
from mentor.records import Problem
from mentor.sampling import check_sampling
from mentor.sampling.backends import check_backend
from mentor.teachers import Teacher, TeacherConfig, teacher_configs


def _default_teachers() -> dict[str, dict[str, Any]]:
    return {
        "sim-a": {"error_rate": 0.1, "style": "canonical", "seed": 1, "malformed_review_rate": 0.05},
        "sim-b": {"error_rate": 0.25, "style": "alternative", "seed": 2, "malformed_review_rate": 0.05},
        "sim-c": {"error_rate": 0.4, "style": "canonical", "seed": 3, "malformed_review_rate": 0.05},
    }


@dataclass
class MapdConfig:
    """What ``mentor mapd`` runs: the problems, the student, the committee and the acceptance rule."""

    task: str = "world"
    """world[:opts], gym:NAME, hf:NAME, or a local data file or folder."""
    split: str = "train"
    n_problems: int | None = 100
    problem_seed: int = 0
    student: str = "world"
    """The student model (mine): world, smollm2, a folder, a .gguf file or a Hugging Face id."""
    student_temperature: float = 0.3
    student_top_p: float = 0.9
    student_max_new_tokens: int = 160
    student_backend: str = "local"
    """What samples the student (mine): mentor's decode loop (local) or a vLLM engine in this process (vllm)."""
    batch_size: int = 16
    teachers: dict[str, dict[str, Any]] = field(default_factory=_default_teachers)
    """name -> TeacherConfig fields (kind simulated, openai or local); the name is recorded in every row."""
    teacher_temperature: float = 0.8
    teacher_max_new_tokens: int = 512
    review_max_new_tokens: int = 256
    seed: int = 0
    prompts_per_call: int = 8
    threshold: float = 3.0
    """A rationale is accepted when its mean valid review score is above this."""
    require_review: bool = True
    require_verified: bool = True
    """Also require the rationale's answer to pass the verifier (mentor's addition to the paper)."""
    ablation: str = "committee"
    """committee (all teachers + review), single (one teacher, no review), no-explanation (rationales only)."""
    single_teacher: str = ""
    """The teacher of the single ablation (default: the first)."""
    rationale_instruction: bool = True
    """Train the rationale task on the prompt plus "Answer step by step." (False: the bare prompt)."""
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise ValueError(f"unknown MAPD ablation {self.ablation!r}; choose from {', '.join(ABLATIONS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 1.0 <= self.threshold <= 5.0:
            raise ValueError(f"threshold must be in [1, 5], got {self.threshold}")
        if self.prompts_per_call < 1 or self.batch_size < 1:
            raise ValueError("prompts_per_call and batch_size must be >= 1")
        check_backend(self.student_backend, "student_backend")
        check_at_most(self, "n_problems", "batch_size", "prompts_per_call", "student_max_new_tokens",
                      "teacher_max_new_tokens", "review_max_new_tokens")
        check_sampling("student_", temperature=self.student_temperature, top_p=self.student_top_p,
                       max_new_tokens=self.student_max_new_tokens)
        check_sampling("teacher_", temperature=self.teacher_temperature, max_new_tokens=self.teacher_max_new_tokens)
        check_sampling("review_", max_new_tokens=self.review_max_new_tokens)
        self.teacher_configs()  # checks every teacher now

    def teacher_configs(self) -> list[TeacherConfig]:
        if not self.teachers:
            raise ValueError("the committee has no teacher (config key teachers)")
        return teacher_configs(self.teachers)

    def problems(self) -> tuple[Any, list[Problem]]:
        from mentor.tasks import load_task

        task = load_task(self.task)
        problems = task.problems(self.split, n=self.n_problems, seed=self.problem_seed)
        if not problems:
            raise ValueError(f"task {self.task!r} has no problems in split {self.split!r}")
        check_problems(problems)
        return task, problems


def build_teachers(config: MapdConfig, cache_dir: str | os.PathLike | None) -> list[Teacher]:
    from mentor.teachers import build_teacher

    return [build_teacher(t, cache_dir) for t in config.teacher_configs()]


def run_pipeline(config: MapdConfig, out: str | os.PathLike, ablations: Sequence[str] = ABLATIONS, *,
                 load_model: Callable[[str], tuple[Any, Any]] | None = None) -> dict[str, Path]:
    """Every stage in order into ``out/{mine,explain,rationales,review}`` and one ``out/build-ABLATION`` per
    ablation (each stage resumes on its own folder); returns the build folders by ablation."""
    if load_model is None:
        from mentor.loading import load_model
    out = Path(out)
    task, problems = config.problems()
    model, tokenizer = load_model(config.student)
    mine(model, tokenizer, task, problems, out / "mine", temperature=config.student_temperature,
         top_p=config.student_top_p, max_new_tokens=config.student_max_new_tokens, seed=config.seed,
         batch_size=config.batch_size, backend=config.student_backend)
    teachers = build_teachers(config, out)
    common = {"seed": config.seed, "prompts_per_call": config.prompts_per_call, "temperature": config.teacher_temperature}
    try:
        explain(teachers, out / "mine", out / "explain", max_new_tokens=config.teacher_max_new_tokens, **common)
        rationales(teachers, task, problems, out / "rationales", max_new_tokens=config.teacher_max_new_tokens,
                   **common)
        review(teachers, out / "rationales", out / "review", threshold=config.threshold,
               require_verified=config.require_verified, require_review=config.require_review,
               max_new_tokens=config.review_max_new_tokens, **common)
    finally:
        for teacher in teachers:
            teacher.close()
    folders = {}
    for ablation in ablations:
        folders[ablation] = out / f"build-{ablation}"
        build(out / "mine", out / "explain", out / "review", folders[ablation], ablation=ablation,
              single_teacher=config.single_teacher, rationale_instruction=config.rationale_instruction)
    return folders
