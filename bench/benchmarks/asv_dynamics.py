"""asv: numerics tracked beside speed — the final loss and the divergence step of representative training runs.

A change in an implementation's numerics shows on the dashboard as a step in these
values, next to any change in its timings. The implementation is the first parameter, as
in the timing benchmarks; one that cannot run here is skipped, never dropped.
"""

import impls
from impls import dynamics

# id -> (preset, dtype, init, optimizer, lr). Ids are recorded in results: append, never change.
CONVERGING = {
    # the notebook's first NumPy run, correct order
    "seed     f64 randn sgd  1e-4": ("seed", "float64", "randn", "sgd", 1e-4),
    "seed     f32 torch adam 1e-4": ("seed", "float32", "torch", "adam", 1e-4),  # the notebook's torch/Adam cell
    "seed     f32 randn sgd  1e-6": ("seed", "float32", "randn", "sgd", 1e-6),  # the notebook's stalling run
    "tutorial f64 torch adam 1e-3": ("tutorial", "float64", "torch", "adam", 1e-3),
    "tutorial f32 torch sgd  1e-4": ("tutorial", "float32", "torch", "sgd", 1e-4),
}
DIVERGENCE = {
    "seed     f64 randn sgd  1e-3": ("seed", "float64", "randn", "sgd", 1e-3),  # diverges
    "seed     f32 randn sgd  1e-4": ("seed", "float32", "randn", "sgd", 1e-4),  # does not; the notebook's order does
    "tutorial f32 randn sgd  1e-5": ("tutorial", "float32", "randn", "sgd", 1e-5),  # diverges
    # does not; the notebook's order does
    "tutorial f64 randn sgd  1e-6": ("tutorial", "float64", "randn", "sgd", 1e-6),
    # does not; the notebook's order does
    "tutorial f64 torch sgd  1e-3": ("tutorial", "float64", "torch", "sgd", 1e-3),
}


def _problem(fields) -> impls.Problem:
    preset, dtype, init, optimizer, lr = fields
    return impls.Problem.preset(preset, dtype=dtype, init=init, optimizer=optimizer, lr=lr)


class _Trajectory:
    """Runs the configuration's 50 steps once in setup; the track_ methods only read the result.

    Setup does not assert agreement here: the tracked value is itself the numerical signal,
    and a failed setup would blank the dashboard exactly when the numbers move.
    """

    configs: dict = {}
    param_names = ["impl", "config"]
    timeout = 300

    def setup(self, name, config):
        reason = impls.available()[name]
        if reason is not None:
            raise NotImplementedError(reason)  # asv: skipped on this machine, the grid stays the same
        self.trajectory = dynamics.run_implementation(name, _problem(self.configs[config]))


class FinalLoss(_Trajectory):
    configs = CONVERGING
    params = [impls.names(), list(CONVERGING)]

    def track_final_loss(self, name, config):
        return self.trajectory.final

    track_final_loss.unit = "loss"


class DivergenceStep(_Trajectory):
    configs = DIVERGENCE
    params = [impls.names(), list(DIVERGENCE)]

    def track_divergence_step(self, name, config):
        """First diverging step, or the run's length (50) when it does not diverge: asv records numbers only."""
        divergence = self.trajectory.divergence
        return self.trajectory.steps if divergence is None else divergence

    track_divergence_step.unit = "step"
