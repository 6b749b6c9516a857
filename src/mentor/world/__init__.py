"""The model organism: a procedurally generated reasoning world, in one package.

- :mod:`~mentor.world.problems`: the problems (clock arithmetic with named variables; the length and the
  number of inputs are the difficulty dial), their canonical and reference solutions, the task;
- :mod:`~mentor.world.habits`: how the base solver errs (a misconception, slips, skips and stops that
  grow along the chain);
- :mod:`~mentor.world.critic`: the exact step critic that writes step-aligned critiques;
- :mod:`~mentor.world.solver`: the tiny base solver, trained from scratch and shipped in the package;
- :mod:`~mentor.world.teacher`: simulated teachers for the offline methods.

It plugs into mentor's interfaces (a :class:`~mentor.tasks.base.Task` with a ``critique`` method, a teacher
with ``chat``, a model folder); the core imports it only where a user names it (``--task world``,
``--model world``, ``teacher.kind=simulated``).
"""
