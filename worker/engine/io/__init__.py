"""Particle input and output: the only package that imports mrcfile or starfile (never torch).

Example:
    from worker.engine.io import ParticleStack, write_stack, write_particles_star
    stack = ParticleStack.open("particles.mrcs")
    write_stack("first10.mrcs", stack.read(0, 10), stack.pixel_size)
"""

from worker.engine.io.mrc import write_stack
from worker.engine.io.particles import ParticleStack
from worker.engine.io.star import write_particles_star

__all__ = ["ParticleStack", "write_particles_star", "write_stack"]
