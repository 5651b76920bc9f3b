"""Inverse sets (Hada & Carreira-Perpinan 2019): sample the inputs whose activations lie in given ranges.

- ``problem``: constraints, and the problem in the shared loop's terms (generator, network taps, readout);
  ``problem_from_functions`` for plain jax functions, ``model_problem`` for a (classifier, generator) pair;
- ``lagrangian``: the augmented Lagrangian's pure pieces, and eq. (8)/(10) as an ``Objective``;
- ``sampler``: the seed phase and the sampling rounds on the shared loop, ``sample``, ``sample_inverse_set``;
- ``metrics``: how spread the samples are.
"""

from jaxviz.inverse_set.lagrangian import (AcceptedStats, LagrangianTarget, accepted_sq_sum, augmented_lagrangian,
                                           constraint_penalty, constraint_values, empty_stats, is_feasible,
                                           lagrangian_objective, pairwise_sq_sum, sampling_objective, slack,
                                           update_multipliers, violation)
from jaxviz.inverse_set.metrics import diversity_figures, mean_pairwise_distance
from jaxviz.inverse_set.problem import (Constraint, Forward, InverseSetProblem, Readout, check_constraints,
                                        default_code_bounds, model_problem, problem_from_functions)
from jaxviz.inverse_set.sampler import (InverseSetConfig, InverseSetResult, initial_codes, sample,
                                        sample_inverse_set, update_rule)

__all__ = [
    "Constraint", "Forward", "InverseSetProblem", "InverseSetConfig", "InverseSetResult", "AcceptedStats",
    "problem_from_functions", "model_problem", "check_constraints", "default_code_bounds", "initial_codes",
    "sample", "sample_inverse_set", "constraint_values", "slack", "constraint_penalty", "update_multipliers",
    "pairwise_sq_sum", "accepted_sq_sum", "augmented_lagrangian", "sampling_objective", "is_feasible",
    "violation", "mean_pairwise_distance", "diversity_figures",
    "empty_stats", "Readout", "LagrangianTarget", "lagrangian_objective", "update_rule",
]
