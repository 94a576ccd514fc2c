"""The progress bar of a round: finished trials of the round, one line per finished trial.

Example:
    >>> with Progress(study, round_) as progress:
    ...     study.optimize(objective, n_trials=1, callbacks=[progress.on_trial])
"""

from __future__ import annotations

import sys
from types import TracebackType

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from ablate.campaign.failfast import ERROR
from ablate.campaign.kinds import Counts, Round


class Progress:
    """A tqdm bar over ``round.counts(study)``: its ``done`` of its ``total``, and the round's postfix.

    Args:
        study: the queue.
        round_: what the bar counts and how a finished trial is named.
    """

    def __init__(self, study: optuna.Study, round_: Round) -> None:
        self.study = study
        self.round = round_
        c = round_.counts(study)
        # disable=None: no bar when stderr is not a terminal (a log, CI), where it would only be
        # carriage-return noise; the one line per finished trial still goes to stdout.
        self.bar = tqdm(total=c.total, initial=min(c.done, c.total), desc=round_.label, unit=round_.unit,
                        dynamic_ncols=True, file=sys.stderr, disable=None)
        self._show(c)

    def refresh(self) -> Counts:
        """Reads the counts again and redraws the bar; returns the counts."""
        c = self.round.counts(self.study)
        self.bar.n = min(c.done, c.total)
        self._show(c)
        return c

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """An Optuna callback: one line for the finished trial (if the round names it; a failed
        one with its error), then the bar."""
        line = self.round.describe(trial)
        if line and trial.state == TrialState.FAIL and trial.user_attrs.get(ERROR):
            line = f"{line} ({trial.user_attrs[ERROR]})"
        if line:
            self.bar.write(f"  {line}")
        self.refresh()

    def _show(self, c: Counts) -> None:
        if self.round.postfix is not None:
            self.bar.set_postfix_str(self.round.postfix(self.study, c), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
