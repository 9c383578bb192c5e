#!/usr/bin/python3
"""Leverage / Lewis / sensitivity references (numpy + scipy), Woodruff & Yasuda 2023, arXiv 2306.00732.
Writes tests/ref/sampler_lev_*.npy:
  heavy_a   [40, 3]  heavy-tailed matrix (Student t, 2 dof, seed 0)
  heavy_tau [40]     leverage scores by numpy QR
  heavy_lw1, heavy_lw15, heavy_lw3 [40]  Lewis weights p = 1, 1.5, 3 (Cohen-Peng fixed point, numpy QR)
  heavy_s1 [40]      exact l1 sensitivities by linear programming (scipy linprog)
  ill_a [600, 8]     cond(A) = 1e10 (U diag(s) V^T, s log-spaced 1 .. 1e-10)
  ill_tau [600]      leverage scores by numpy QR (sum ||Q_i||^2)
  ill_tau_true [600] ||U_i||^2, the exact scores of the unrounded matrix
"""
import os

import numpy as np
from scipy.optimize import linprog

HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, a):
    np.save(os.path.join(HERE, "sampler_lev_%s.npy" % name), np.ascontiguousarray(a, dtype=np.float64))


def lev(a):
    q, _ = np.linalg.qr(a)
    return (q * q).sum(1)


def lewis(a, p, iters=500):
    w = np.ones(len(a))
    for _ in range(iters):
        t = lev(a * (w ** (0.5 - 1 / p))[:, None])
        w = w ** (1 - p / 2) * t ** (p / 2)
    return w


def l1_sens(a):
    n, d = a.shape
    s = np.zeros(n)
    for i in range(n):
        # min sum t  s.t. -t <= A x <= t, a_i x = 1 ; variables [x (d), t (n)]
        c = np.r_[np.zeros(d), np.ones(n)]
        A_ub = np.block([[a, -np.eye(n)], [-a, -np.eye(n)]])
        b_ub = np.zeros(2 * n)
        A_eq = np.r_[a[i], np.zeros(n)][None, :]
        r = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0],
                    bounds=[(None, None)] * d + [(0, None)] * n, method="highs")
        assert r.status == 0
        s[i] = 1.0 / r.fun
    return s


rs = np.random.RandomState(0)
H = rs.standard_t(2, size=(40, 3))
save("heavy_a", H)
save("heavy_tau", lev(H))
save("heavy_lw1", lewis(H, 1.0))
save("heavy_lw15", lewis(H, 1.5))
save("heavy_lw3", lewis(H, 3.0))
save("heavy_s1", l1_sens(H))
B = np.array([[1.0, 0], [0, 1], [1, 1], [2, -1]])
print("worked vector: tau", lev(B), "l1 lewis", lewis(B, 1.0), "l1 sens", l1_sens(B))

U, _ = np.linalg.qr(rs.randn(600, 8))
V, _ = np.linalg.qr(rs.randn(8, 8))
s = np.logspace(0, -10, 8)
A = (U * s) @ V.T
save("ill_a", A)
save("ill_tau", lev(A))
# the column space of A is U's: true scores ||U_i||^2 (A itself is rounded, so
# any method, numpy's QR included, is only accurate to about cond(A) eps)
save("ill_tau_true", (U * U).sum(1))
print("cond", np.linalg.cond(A), "numpy QR max error", np.abs(lev(A) - (U * U).sum(1)).max())
