"""`search finalize`: the best configurations of a search, trained longer, several seeds each.

A search ranks candidates with short, pruned runs. Finalizing retrains its top-K feasible
configurations (by validation accuracy) with a longer schedule, N seeds each, and tests
them. The runs are trials of a companion study (`S.final`) with its own stored definition,
enqueued here and trained by the ordinary workers (`search worker --study S.final`), so
heartbeats, retries, resume-from-checkpoint and many GPUs or hosts work as in a search.

One module per job: plan.py (what to retrain and enqueue; finding the companion study),
objective.py (the worker's objective: train, test, the test accuracy is the value; it
imports torch, so it is not imported here), results.py (means over seeds, rank agreement,
the winner and its gain over hand-designed baselines; the model to export). The tables that
show the results are in search/tables.py.
"""
from .plan import EPOCHS_FACTOR, companion, final_recipe, final_study_name, finalize, open_final, with_epochs
from .results import best_final, final_results, select_winner, spearman

__all__ = ["EPOCHS_FACTOR", "companion", "final_recipe", "final_study_name", "finalize", "open_final", "with_epochs",
           "best_final", "final_results", "select_winner", "spearman"]
