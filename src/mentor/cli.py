"""The ``mentor`` command: a thin layer over the library.

Errors a user can cause (a bad path, config key, task or model) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from mentor import __version__
from mentor.commands.evaluation import demo, eval_command
from mentor.commands.launch import launch_command
from mentor.commands.offline import (
    distill_command,
    generate_command,
    mapd_build,
    mapd_explain,
    mapd_mine,
    mapd_rationales,
    mapd_review,
)
from mentor.commands.training import analyze_command, compare_command, train_command
from mentor.commands.world import world_build, world_show
from mentor.config import MAX_COUNT

# mentor's own errors (ConfigError, RecordError are ValueErrors; ModelLoadError is an OSError) and the
# standard ones a bad argument raises; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from mentor.models import ModelLoadError
    from mentor.runlock import FolderInUse
    from mentor.sampling.openai_compatible import SamplerError

    # SamplerError: a server that cannot be reached, refuses the request or answers garbage (a served critic
    # or teacher in any command); what the run wrote so far is kept and the same command resumes
    return (*USER_ERRORS, ModelLoadError, FolderInUse, SamplerError)


# ----- parser -----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """``--help`` of a command that takes ``KEY=VALUE`` overrides also lists its config keys and defaults,
    read from the config dataclass (``config_keys``: ``"module:Class"``) only when help is asked for."""

    config_keys: str | None = None
    config_only: tuple[str, ...] | None = None  # the keys this command reads (None: all of them)
    config_file: str = "the --config YAML file"

    def format_help(self) -> str:
        text = super().format_help()
        if self.config_keys:
            import importlib

            from mentor.config import config_help

            module, name = self.config_keys.split(":")
            keys = config_help(getattr(importlib.import_module(module), name), only=self.config_only)
            text += (f"\nconfig keys (as KEY=VALUE overrides or in {self.config_file}), with their defaults:\n"
                     + "\n".join(keys) + "\n")
        return text

    def error(self, message: str) -> NoReturn:
        """A bad flag or argument is one line, as every other user error is (``mentor CMD --help`` shows usage)."""
        command = self.prog.removeprefix("mentor").strip()
        self.exit(2, f"mentor: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")




def _bounded_int(low: int, high: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low:,} and {high:,}, got {value:,}")
        return value

    parse.__name__ = what  # argparse names the type in its own messages
    return parse


COUNT = _bounded_int(1, MAX_COUNT, "a count")
STEPS = _bounded_int(0, MAX_COUNT, "a number of steps")
SEED = _bounded_int(0, 2**63 - 1, "a seed")


def _keys(parser: argparse.ArgumentParser, config_class: str, only: tuple[str, ...] | None = None,
          config_file: str | None = None) -> argparse.ArgumentParser:
    parser.config_keys, parser.config_only = config_class, only
    if config_file:
        parser.config_file = config_file
    return parser


#: the MapdConfig keys each ``mentor mapd`` stage reads
MAPD_STAGE_KEYS = {
    "mine": ("task", "n_problems", "problem_seed", "student", "student_temperature", "student_top_p",
             "student_max_new_tokens", "student_backend", "batch_size", "seed"),
    "explain": ("teachers", "teacher_temperature", "teacher_max_new_tokens", "prompts_per_call", "seed"),
    "rationales": ("task", "n_problems", "problem_seed", "teachers", "teacher_temperature", "teacher_max_new_tokens",
                   "prompts_per_call", "seed"),
    "review": ("teachers", "threshold", "require_review", "require_verified", "teacher_temperature",
               "review_max_new_tokens", "prompts_per_call", "seed"),
    "build": ("ablation", "single_teacher", "rationale_instruction"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mentor", description="The mentor command: teach small language models to reason "
                                                 "from feedback.")
    parser.add_argument("--version", action="version", version=f"mentor {__version__}")
    parser.add_argument("--threads", type=COUNT, default=None, metavar="N",
                        help="torch CPU threads (default: torch's, or OMP_NUM_THREADS); on a machine shared with "
                        "other jobs, 1 per job is often several times faster than the default")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("demo", help="build or load the world's base solver, show examples and the "
                            "evaluation table with and without context")
    p.add_argument("-n", type=COUNT, default=50, help="held-out problems to evaluate (default 50)")
    p.add_argument("-k", type=COUNT, default=8, help="samples per problem (default 8)")
    p.add_argument("--seed", type=SEED, default=0, help="sampling seed of the examples, the evaluation and the run (default 0)")
    p.add_argument("--out", default="runs/demo", help="where to write results (default runs/demo)")
    p.add_argument("--train-steps", dest="train_steps", type=STEPS, default=60,
                   help="steps of the short training run (default 60; 0 skips it)")
    p.add_argument("--method", choices=("grpo", "sd-critique"), default="grpo",
                   help="the short run's method (default grpo: 2 prompts x 8 rollouts a step at lr 1e-4; "
                   "sd-critique: 16 prompts x 1 at lr 3e-4)")
    p.set_defaults(func=demo)

    world = commands.add_parser("world", help="the model organism: build its base solver, show problems")
    world_commands = world.add_subparsers(dest="world_command", metavar="WORLD_COMMAND", required=True)
    p = world_commands.add_parser("build", help="train the world's tiny base solver from scratch (cached)")
    p.add_argument("--config", help="YAML file with WorldModelConfig fields")
    p.add_argument("--out", help="output folder (default: the cache, keyed by the config)")
    p.add_argument("--force", action="store_true", help="rebuild even when a cached build exists")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. sft.steps=200 world.steps=5")
    p.set_defaults(func=world_build)
    _keys(p, "mentor.world.solver:WorldModelConfig")
    p = world_commands.add_parser("show", help="print world problems with canonical and reference solutions")
    p.add_argument("--task", default="world", help="world spec, e.g. world:steps=5,modulus=10")
    p.add_argument("-n", type=COUNT, default=3, help="problems to print (default 3)")
    p.add_argument("--split", default="test", help="train, validation or test (default test)")
    p.add_argument("--seed", type=SEED, default=0, help="which problems of the split (default 0)")
    p.set_defaults(func=world_show)

    p = commands.add_parser("eval", help="Avg@k, Pass@k, Maj@k of a model on a task or data file")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--task", help="world[:opts], gym:NAME, hf:NAME (default world)")
    source.add_argument("--data", help="a local file or folder (GSM8K, MATH, prompt/completion, messages)")
    p.add_argument("--model", help="world, smollm2, a local folder, a .gguf file or a Hugging Face id")
    p.add_argument("-k", type=COUNT, help="samples per problem (default 8)")
    p.add_argument("-n", type=COUNT, help="number of problems (default 50)")
    p.add_argument("--split", help="split to evaluate (default test)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 1.0; 0 = greedy)")
    p.add_argument("--top-p", dest="top_p", type=float, help="nucleus sampling (default 1.0)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=COUNT, help="default 160")
    p.add_argument("--seed", type=SEED, help="sampling seed (default 0)")
    p.add_argument("--problem-seed", dest="problem_seed", type=SEED,
                   help="which problems of the split (generated tasks; default 0)")
    p.add_argument("--batch-size", dest="batch_size", type=COUNT, help="prompts per generation batch")
    p.add_argument("--backend", help="local (default) or vllm: sample with a vLLM engine built from the model's folder")
    p.add_argument("--context", help="comma list of none,reference,critique (default none)")
    p.add_argument("--config", help="YAML file with EvalConfig fields")
    p.add_argument("--out", help="folder for results.json and the rollouts")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="EvalConfig overrides")
    p.set_defaults(func=eval_command)
    _keys(p, "mentor.evaluate:EvalConfig")

    p = commands.add_parser("generate", help="G scored teacher responses per prompt with group statistics and "
                            "every normalisation's weight (AdvDistill data); resumable")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--task", help="world[:opts], gym:NAME, hf:NAME (default world)")
    source.add_argument("--data", help="a local file or folder (GSM8K, MATH, prompt/completion, messages)")
    p.add_argument("-n", type=COUNT, help="number of problems (default 100)")
    p.add_argument("-G", "--group-size", dest="group_size", type=COUNT, help="responses per prompt (default 8)")
    p.add_argument("--split", help="split to generate for (default train)")
    p.add_argument("--seed", type=SEED, help="sampling seed (default 0)")
    p.add_argument("--config", help="YAML file with GenerateConfig fields (teacher, rewards, weighting, ...)")
    p.add_argument("--out", default="runs/generate", help="output folder; an existing one is resumed "
                   "(default runs/generate)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. teacher.kind=openai teacher.base_url=http://127.0.0.1:8000 teacher.model=NAME "
                   "teacher.error_rate=0.3 rewards.weights.format=0.2 weighting.normalisation=softmax")
    p.set_defaults(func=generate_command)
    _keys(p, "mentor.offline.generate:GenerateConfig")

    mapd = commands.add_parser("mapd", help="MAPD / FAIR: mine student mistakes, committee explanations, "
                               "rationales, peer review, the two-task dataset (each stage resumable)")
    mapd_commands = mapd.add_subparsers(dest="mapd_command", metavar="MAPD_COMMAND", required=True)

    def mapd_parser(name: str, help: str, func, out: str):
        p = mapd_commands.add_parser(name, help=help)
        p.add_argument("--config", help="YAML file with MapdConfig fields (task, student, teachers, threshold...)")
        p.add_argument("--out", default=f"runs/mapd/{out}", help=f"output folder; an existing one is resumed "
                       f"(default runs/mapd/{out})")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="e.g. n_problems=50 teachers.sim-a.error_rate=0.3 threshold=3.5 require_verified=false")
        p.set_defaults(func=func)
        return _keys(p, "mentor.offline.mapd_run:MapdConfig", MAPD_STAGE_KEYS.get(name))

    p = mapd_parser("mine", "the student answers the training questions; the wrong answers are kept", mapd_mine,
                    "mine")
    p.add_argument("--data", help="a local data file or folder instead of config key task")
    p = mapd_parser("explain", "every teacher explains every mined mistake (gold answer as a hint)", mapd_explain,
                    "explain")
    p.add_argument("--mined", default="runs/mapd/mine", help="the mine stage's folder (default runs/mapd/mine)")
    p = mapd_parser("rationales", "every teacher answers every question step by step", mapd_rationales,
                    "rationales")
    p.add_argument("--data", help="a local data file or folder instead of config key task")
    p = mapd_parser("review", "every rationale scored 1-5 by every other teacher; acceptance", mapd_review, "review")
    p.add_argument("--rationales", default="runs/mapd/rationales",
                   help="the rationales stage's folder (default runs/mapd/rationales)")
    p = mapd_parser("build", "the two-task instruction dataset (explanation, rationale)", mapd_build, "build")
    p.add_argument("--mined", default="runs/mapd/mine", help="the mine stage's folder (default runs/mapd/mine)")
    p.add_argument("--explanations", default="runs/mapd/explain",
                   help="the explain stage's folder (default runs/mapd/explain)")
    p.add_argument("--reviewed", default="runs/mapd/review", help="the review stage's folder (default runs/mapd/review)")
    p.add_argument("--ablation", choices=("committee", "single", "no-explanation"),
                   help="default: config key ablation (committee)")

    p = commands.add_parser("launch", help="accelerate launch of mentor train or distill on several processes: "
                            "the config checked before the workers start, a worker's refusal printed last")
    p.add_argument("--config_file", help="an accelerate config (examples/accelerate/ddp.yaml or fsdp.yaml)")
    p.add_argument("--num_processes", type=COUNT, default=2, help="training processes (default 2)")
    p.add_argument("--main_process_port", type=COUNT, help="the processes' rendezvous port (default accelerate's)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="train ... or distill ..., as you would run it alone")
    p.set_defaults(func=launch_command)

    p = commands.add_parser("train", help="on-policy training: grpo, sd-reference, sd-critique, sd-success, blends")
    p.add_argument("--config", help="YAML file with TrainConfig fields (model, task, lora, critic, onpolicy)")
    p.add_argument("--out", help="run folder; an existing one is resumed (default runs/train-METHOD-seedS)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. onpolicy.method=sd-critique onpolicy.steps=100 onpolicy.lr=1e-4 model=world")
    p.set_defaults(func=train_command)
    _keys(p, "mentor.train.recipe:TrainConfig")

    p = commands.add_parser("analyze", help="per-token advantage of the reference and critique contexts: "
                            "HTML, aggregates by first wrong step, plots")
    p.add_argument("--model", default="world", help="checkpoint: world, a run's best/ or final/ folder, ...")
    p.add_argument("--task", default="world", help="world[:opts], gym:NAME, hf:NAME or a data file (default world)")
    p.add_argument("--rollouts", help="rollouts JSONL (e.g. mentor eval's rollouts_none.jsonl); default: sample")
    p.add_argument("-n", type=COUNT, default=50, help="problems to sample one rollout each (default 50)")
    p.add_argument("--problems-pool", dest="problems_pool", type=COUNT, default=1000,
                   help="with --rollouts: how many problems of the split to search for their ids")
    p.add_argument("--split", default="test", help="where the problems come from (default test)")
    p.add_argument("--contexts", default="reference,critique", help="comma list of reference, critique (default both)")
    p.add_argument("--seed", type=SEED, default=0, help="sampling seed of the rollouts (default 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the rollouts (default 1.0)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=COUNT, default=160, help="default 160")
    p.add_argument("--critic-base-url", dest="critic_base_url", help="an OpenAI-compatible LLM critic")
    p.add_argument("--critic-model", dest="critic_model", help="the served critic's model name")
    p.add_argument("--critic-api-key-env", dest="critic_api_key_env", default="OPENAI_API_KEY",
                   help="the environment variable holding the critic's API key (default OPENAI_API_KEY)")
    p.add_argument("--device", default="auto", help="auto (the accelerator when there is one, else cpu), cpu, cuda, "
                   "cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on a GPU that supports it, else float32), float32, "
                   "bfloat16, float16")
    p.add_argument("--out", default="runs/analysis", help="report folder (default runs/analysis)")
    p.set_defaults(func=analyze_command)

    p = commands.add_parser("distill", help="offline training on a mentor generate folder (AdvDistill, "
                            "SFT on all responses, rejection-sampling SFT) or a mentor mapd build folder (mode=mapd)")
    p.add_argument("--config", help="YAML file with DistillConfig fields")
    p.add_argument("--out", help="run folder (default runs/distill-MODE-seedS)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. data=runs/gen mode=advdistill normalisation=zscore sft.steps=200")
    p.set_defaults(func=distill_command)
    _keys(p, "mentor.offline.train:DistillConfig")

    p = commands.add_parser("compare", help="several methods x seeds under one budget; a markdown report")
    p.add_argument("config", nargs="?", help="YAML with CompareConfig fields (default: the shipped world "
                   "comparison, GRPO vs sd-reference vs sd-critique, 3 seeds)")
    p.add_argument("--out", default="runs/compare", help="report and run folders; finished runs are reused "
                   "(default runs/compare)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. seeds=[0] shared.steps=20 workers=2")
    p.set_defaults(func=compare_command)
    _keys(p, "mentor.experiments:CompareConfig", config_file="the config YAML file")
    return parser


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (a live progress display replaces it while it runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def _show_log() -> None:
    """mentor's own log at INFO (``resuming RUN at step N``, the guards' warnings) on stderr, as plain lines."""
    logger = logging.getLogger("mentor")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ``KEY=VALUE`` overrides allowed on both sides of an option (``train a=1 --out
    DIR b=2``): argparse alone takes one run of positionals and calls the rest unrecognized."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    _show_log()
    try:
        return args.func(args)
    except KeyboardInterrupt as interrupt:  # its text, if any, says what was kept
        print(f"mentor: interrupted{': ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
        return 130
    except _user_errors() as err:
        if os.environ.get("MENTOR_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        sys.stderr.write(f"mentor: error: {message}\n")  # one write: launched workers share the stream
        sys.stderr.flush()
        return 2


if __name__ == "__main__":
    sys.exit(main())
