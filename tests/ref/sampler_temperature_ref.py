#!/usr/bin/python3
"""Temperature / UniMax / virtual-size references (numpy): arXiv 1907.05019, 2304.09151.
Writes tests/ref/sampler_temperature.txt: "<name> v1 v2 ..." with %.17g."""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
lines = []
sizes = np.array([1000.0, 100.0, 10.0])
for T in [1, 2, 3.33, 5, 0.5]:
    p = sizes / sizes.sum()
    q = p ** (1 / T)
    q /= q.sum()
    lines.append("temp_T=%g " % T + " ".join("%.17g" % v for v in q))
# fairseq default virtual size int(min(sum (q_i/q_L) n_L, 1.5 N)) and ratios
for T in [1, 2, 5]:
    p = sizes / sizes.sum()
    q = p ** (1 / T)
    q /= q.sum()
    v = int(min((q / q[0] * sizes[0]).sum(), 1.5 * sizes.sum()))
    lines.append("vsize_T=%g %d" % (T, v))
# UniMax (Chung et al. 2023, Alg. 1; the unimax-sampling package example)
c = np.array([549707867, 10027573389, 42541080893, 179955884499, 184595788282], dtype=float)
B, N = 2.5e11, 4
order = np.argsort(c, kind="stable")
U = np.zeros_like(c)
for i, l in enumerate(order):
    U[l] = min(B / (len(c) - i), N * c[l])
    B -= U[l]
lines.append("unimax_U " + " ".join("%.17g" % v for v in U))
lines.append("unimax_p " + " ".join("%.17g" % v for v in U / U.sum()))
with open(os.path.join(HERE, "sampler_temperature.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
