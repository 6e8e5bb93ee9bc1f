"""Mutants of the solutions that the checks accept, each with the reason it is harmless.

A mutant is listed only when it is equivalent to the solution for every valid input (so no check
could reject it) or differs only where the exercise's contract allows. Keys are exercise ids;
each maps the mutant's description, as ``python -m coursekit.course.mutants N.k`` prints it, to
the reason. tests/course/test_exercises.py fails on a survivor missing here and on a stale entry.
"""

SURVIVORS: dict[str, dict[str, str]] = {
    "6.1": {
        "returned `-mean` flattened":
            "the estimate is already one-dimensional, of shape (d,): reshape(-1) is the identity",
    },
    "7.3": {
        "line 8: `torch.log(u) < log_alpha` -> `torch.log(u) <= log_alpha` (comparison)":
            "log u = log alpha has probability zero for a continuous uniform u: both rules accept with probability alpha",
        "line 7: `u_x - u_y` -> `u_x.sub_(u_y)` (in place)":
            "u_x is the answer's own local tensor (from energy_and_grad), used once: changing it in place changes nothing",
        "returned `x_next` detached":
            "a sampler's states are samples, not functions of theta: the exercise's contract asks for no gradient",
        "returned `log_alpha` detached":
            "log alpha only decides acceptance; the exercise's contract asks for no gradient through it",
        "returned `log_alpha` flattened":
            "log alpha already has shape (n,): reshape(-1) is the identity",
    },
    "2.1": {
        "line 4: `x - mean` -> `mean - x` (swap operands)":
            "the covariance is quadratic in the centred data: (-c)^T (-c) = c^T c, exactly",
        "line 5: `centred` -> `x` (centred -> x)":
            "x^T c = c^T c + m (1^T c) and the centred rows sum to zero: the same matrix up to rounding",
        "line 5: `centred` -> `x` (centred -> x) #2":
            "c^T x = c^T c + (c^T 1) m^T and the centred rows sum to zero: the same matrix up to rounding",
        "line 5: `x` -> `centred` (x -> centred)":
            "only the number of rows is read (`.shape[0]`), and centred has the rows of x",
        "returned `mean` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "2.2": {
        "returned `new_m` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
        "returned `new_s` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "2.3": {
        "line 3: `samples.unsqueeze(-2) - train` -> `train - samples.unsqueeze(-2)` (swap operands)":
            "only the squares of the differences are used: (t - s)^2 = (s - t)^2, exactly",
        "returned `d` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "3.2": {
        "returned `base.log_prob(z) + log_det_inv` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "3.3": {
        "line 6: `total + log_det` -> `total.add_(log_det)` (in place)":
            "total is the function's own accumulator (x.new_zeros), not an input: adding in place is the same sum",
        "returned `base.log_prob(x) + total` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "4.1": {
        "line 5: `x` -> `z` (x -> z)":
            "z is the answer's own result, with the rows, dtype and device of x: z.new_zeros(z.shape[0]) is the "
            "same zeros",
        "line 5: `x` -> `z` (x -> z) #2":
            "z has the rows, dtype and device of x: x.new_zeros(z.shape[0]) and z.new_zeros(x.shape[0]) are the "
            "same zeros",
        "returned `log_det` detached":
            "the log-determinant is the constant 0, which depends on no parameter: new_zeros is already off the graph",
        "returned `log_det` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "4.2": {
        "line 4: `x` -> `z` (x -> z)": "z = x / s has the rows of x: z.shape[0] is x.shape[0]",
        "returned `log_det` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "4.3": {
        "line 6: `-1` -> `1` (drop the minus sign)":
            "a is 2-D, of shape (n, p - r): a.sum(1) sums the same last axis as a.sum(-1)",
        "returned `log_det` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "5.1": {
        "line 5: `-1` -> `1` (drop the minus sign)":
            "alpha is 2-D, of shape (n, p): alpha.sum(1) sums the same last axis as alpha.sum(-1)",
        "returned `log_det` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "5.2": {
        "line 5: `-1` -> `1` (drop the minus sign)":
            "sigma is 2-D, of shape (n, p): .sum(1) sums the same last axis as .sum(-1)",
        "returned `log_det` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "5.3": {
        "line 5: `log_q0 - alpha.sum(-1)` -> `log_q0.sub_(alpha.sum(-1))` (in place)":
            "log_q0 is the answer's own tensor (a sum it just made), not an input: subtracting in place gives the same "
            "values and gradients",
        "line 4: `-1` -> `1` (drop the minus sign)":
            "the log-densities are 2-D, of shape (n, p): .sum(1) sums the same last axis as .sum(-1)",
        "line 5: `-1` -> `1` (drop the minus sign)":
            "alpha is 2-D, of shape (n, p): alpha.sum(1) sums the same last axis as alpha.sum(-1)",
        "returned `log_p` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "3.4": {
        "line 4: `u @ w` -> `w @ u` (swap operands)": "the dot product is symmetric: u^T w = w^T u, exactly",
        "returned `torch.log(torch.abs(1 + (1 - torch.tanh(a) ** 2…` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "4.4": {
        "line 7: `k + 1` -> `k - 1` (operator)":
            "(-1) ** (k - 1) = (-1) ** (k + 1) for every integer k: the exponents differ by 2",
        "returned `total` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
    "4.5": {
        "line 6: `z - z_old` -> `z_old - z` (swap operands)":
            "the bound uses only the norm: ||-d|| = ||d||, exactly",
        "returned `bound` detached":
            "the bound is a stopping test, not trained: the exercise's contract asks for no gradient through it",
        "returned `bound` flattened": "a 1-D result: reshape(-1) returns the same values, shape, dtype and graph",
    },
}
