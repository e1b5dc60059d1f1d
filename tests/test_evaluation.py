from types import SimpleNamespace

import pytest
import torch

from clbench.evaluation import AccuracyCollector, masked_correct


def test_class_il_and_task_il_differ_on_crafted_logits():
    # Two tasks: {0, 1} and {2, 3}. Example 0 (class 0) has its highest logit on class 2,
    # which class-IL may predict but task-IL (restricted to {0, 1}) may not.
    logits = torch.tensor(
        [
            [0.5, 0.1, 0.9, 0.0],  # y=0: class-IL -> 2 (wrong), task-IL -> 0 (right)
            [0.0, 0.3, 0.1, 0.2],  # y=1: both right
            [0.9, 0.0, 0.1, 0.2],  # y=3: class-IL -> 0 (wrong), task-IL {2,3} -> 3 (right)
        ]
    )
    seen = [0, 1, 2, 3]
    assert masked_correct(logits[:2], torch.tensor([0, 1]), seen) == 1
    assert masked_correct(logits[:2], torch.tensor([0, 1]), [0, 1]) == 2
    assert masked_correct(logits[2:], torch.tensor([3]), seen) == 0
    assert masked_correct(logits[2:], torch.tensor([3]), [2, 3]) == 1


def test_class_il_excludes_unseen_classes():
    logits = torch.tensor([[0.1, 0.2, 5.0, 0.0]])
    assert masked_correct(logits, torch.tensor([1]), [0, 1]) == 1
    assert masked_correct(logits, torch.tensor([1]), [0, 1, 2, 3]) == 0
    assert masked_correct(logits, torch.tensor([1]), []) == 0


def _fake_strategy(task, logits, targets):
    return SimpleNamespace(
        experience=SimpleNamespace(current_experience=task), mb_output=logits, mb_y=torch.tensor(targets)
    )


def test_collector_builds_both_rows_from_one_pass():
    collector = AccuracyCollector([[0, 1], [2, 3]])
    collector.expect([0, 1])
    # task 0 test data, two mini-batches
    collector.after_eval_iteration(_fake_strategy(0, torch.tensor([[1.0, 0.0, 9.0, 0.0]]), [0]))
    collector.after_eval_iteration(_fake_strategy(0, torch.tensor([[0.0, 1.0, 0.0, 0.0]]), [0]))
    # task 1 (not yet learned): class-IL can't predict 2 or 3
    collector.after_eval_iteration(_fake_strategy(1, torch.tensor([[0.0, 0.0, 1.0, 0.0], [0, 0, 0, 1.0]]), [2, 3]))
    row = collector.row()
    assert row.class_il == [50.0, 0.0]
    assert row.task_il == [50.0, 100.0]


def test_collector_refuses_a_pass_that_missed_a_task():
    collector = AccuracyCollector([[0, 1], [2, 3]])
    collector.expect([0, 1])
    collector.after_eval_iteration(_fake_strategy(0, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), [0]))
    with pytest.raises(RuntimeError, match=r"\[1\]"):
        collector.row()
