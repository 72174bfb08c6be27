"""A plugin: the first hidden block stops training after fraction `after` of the run.

    python experiments.py --plugin examples/late_freeze.py --strategies standard,late-freeze[after=0.5|0.75]
"""
from dataclasses import dataclass

from schedules import Schedule, on
from strategies import register


@register("late-freeze", description="block 1 frozen after fraction `after` of the run")
@dataclass(frozen=True)
class LateFreeze(Schedule):
    after: float = 0.5  # a knob: late-freeze[after=0.75]

    def factors(self, epoch, step, run, state):
        frozen = {0} if step >= self.after * run.total_steps else set()
        return on(set(range(run.units)) - frozen, run)
