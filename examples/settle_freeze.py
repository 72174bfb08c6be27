"""An adaptive plugin: the first unit freezes for good once ||W - W_last|| / ||W_last|| over an epoch < `below`.

    python experiments.py --plugin examples/settle_freeze.py --strategies standard,settle-freeze[below=0.05]
"""
from dataclasses import dataclass

from schedules import Schedule, on
from strategies import register


@register("settle-freeze", description="the first unit freezes once it moves less than `below` in an epoch")
@dataclass(frozen=True)
class SettleFreeze(Schedule):
    below: float = 0.02
    observes = ("relative_weight_change",)

    def start(self, run):
        return {"frozen_at": None}  # the epochs finished when unit 0 froze

    def observe(self, state, obs, run):
        settled = state["frozen_at"] is None and obs["relative_weight_change"][0] < self.below
        return {"frozen_at": obs.epochs_done} if settled else state

    def factors(self, epoch, step, run, state):
        return on(range(0 if state["frozen_at"] is None else 1, run.units), run)
