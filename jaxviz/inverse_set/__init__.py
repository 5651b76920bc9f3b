"""Inverse sets (Hada & Carreira-Perpinan 2019): sample the inputs whose activations lie in given ranges."""

from jaxviz.inverse_set.sampler import (AcceptedStats, Constraint, Forward, InverseSetConfig, InverseSetProblem,
                                        InverseSetResult, accepted_sq_sum, augmented_lagrangian, check_constraints,
                                        constraint_penalty, constraint_values, default_code_bounds,
                                        diversity_figures, initial_codes, is_feasible, mean_pairwise_distance,
                                        model_problem, pairwise_sq_sum, problem_from_functions, sample,
                                        sample_inverse_set, sampling_objective, slack, update_multipliers,
                                        violation)

__all__ = [
    "Constraint", "Forward", "InverseSetProblem", "InverseSetConfig", "InverseSetResult", "AcceptedStats",
    "problem_from_functions", "model_problem", "check_constraints", "default_code_bounds", "initial_codes",
    "sample", "sample_inverse_set", "constraint_values", "slack", "constraint_penalty", "update_multipliers",
    "pairwise_sq_sum", "accepted_sq_sum", "augmented_lagrangian", "sampling_objective", "is_feasible",
    "violation", "mean_pairwise_distance", "diversity_figures",
]
