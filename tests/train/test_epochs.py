"""The epoch body both training loops share (`train.loop.epochs`), on a trainer that records
what it is asked to do."""

from dataclasses import dataclass, field

from bc_ray.train.loop import epochs


@dataclass
class RecordingTrainer:
    """Trains nothing: logs each call, evaluates every 2nd epoch, spends its budget at `budget`."""

    epochs: int
    budget: int = 0
    stop_after: int = 0  # evaluations after which it has converged (0: never)
    calls: list = field(default_factory=list)
    history: list = field(default_factory=list)

    @property
    def config(self):
        return self

    def run_epoch(self, epoch, progress=None):
        self.calls.append(("steps", epoch))
        return {"epoch": epoch}

    def is_last(self, epoch):
        return epoch == self.epochs or 0 < self.budget <= epoch

    def should_evaluate(self, epoch):
        return epoch % 2 == 0 or self.is_last(epoch)

    def evaluate(self, epoch):
        self.calls.append(("evaluate", epoch))
        return {"recall": epoch / 10}

    @property
    def patience(self):
        return self.stop_after

    @property
    def converged(self):  # validation stopped improving: from `stop_after` on, when set
        return 0 < self.stop_after <= len([c for c in self.calls if c[0] == "evaluate"])


def test_each_epoch_is_run_evaluated_when_due_and_recorded_until_the_last():
    trainer = RecordingTrainer(epochs=5)
    seen = list(epochs(trainer, 0, 2, 2, None,
                       on_last=lambda: trainer.calls.append(("last", None))))
    assert [(epoch, last) for epoch, _, last in seen] == [(2, False), (3, False), (4, False),
                                                          (5, True)]
    assert trainer.calls == [("steps", 2), ("evaluate", 2), ("steps", 3), ("steps", 4),
                             ("evaluate", 4), ("steps", 5), ("last", None), ("evaluate", 5)]
    assert trainer.history == [stats for _, stats, _ in seen]
    assert all(stats["resumed_from"] == 2 for _, stats, _ in seen)
    assert seen[-1][1]["recall"] == 0.5


def test_a_spent_step_budget_ends_the_epochs_and_nothing_is_left_after_the_last():
    trainer = RecordingTrainer(epochs=10, budget=3)
    assert [epoch for epoch, _, _ in epochs(trainer, 0, 1, None, None)] == [1, 2, 3]
    assert list(epochs(RecordingTrainer(epochs=3), 0, 4, 4, None)) == []


def test_validation_that_stopped_improving_ends_the_epochs_as_fit_does():
    """`patience` stops the Ray Train loop as it stops `VersionTrainer.fit`: the epoch whose
    evaluation converged is the last (checkpointed and gated), `on_last` after it."""
    trainer = RecordingTrainer(epochs=10, stop_after=2)
    seen = list(epochs(trainer, 0, 1, None, None,
                       on_last=lambda: trainer.calls.append(("last", None))))
    assert [(epoch, last) for epoch, _, last in seen] == [(1, False), (2, False), (3, False),
                                                          (4, True)]
    assert trainer.calls[-2:] == [("evaluate", 4), ("last", None)]
