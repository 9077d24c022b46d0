"""Independent oracle for husai's logistic probes (tests/unit/metrics/test_probing.cpp, ProbeOracle).

Builds the same formula data as the C++ test, standardises features with the population standard deviation,
and minimises mean cross-entropy + (l2 / 2) ||W||^2 (bias unpenalised) with SciPy's L-BFGS-B at a tight
tolerance. Prints the optimum as C++ initialisers; the numbers in the test were produced by this script
(NumPy 1.24, SciPy 1.10). sklearn is not installed on the build machine, hence SciPy.
"""
import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, expit

N, F, L2 = 60, 3, 0.05


def data():
    i = np.arange(N)[:, None]
    j = np.arange(F)[None, :]
    x = np.sin(0.37 * (i + 1) * (j + 1) + 0.5 * j) + 0.1 * j
    s = x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] + 0.4 * np.sin(1.7 * np.arange(N))
    y2 = (s > 0).astype(int)
    z = np.stack([x[:, 0], x[:, 1] - x[:, 2], 0.5 * np.cos(2.3 * np.arange(N))], axis=1)
    y3 = np.argmax(z, axis=1)
    return x, y2, y3


def fit(x, y, n_classes):
    xs = (x - x.mean(0)) / x.std(0)
    n_out = 1 if n_classes == 2 else n_classes

    def obj(p):
        W = p[: n_out * F].reshape(n_out, F)
        b = p[n_out * F:]
        Z = xs @ W.T + b
        if n_out == 1:
            z = Z[:, 0]
            loss = np.mean(np.logaddexp(0, z) - y * z)
            d = (expit(z) - y)[:, None]
        else:
            lse = logsumexp(Z, axis=1)
            loss = np.mean(lse - Z[np.arange(N), y])
            P = np.exp(Z - lse[:, None])
            P[np.arange(N), y] -= 1
            d = P
        loss += 0.5 * L2 * np.sum(W * W)
        gW = d.T @ xs / N + L2 * W
        gb = d.sum(0) / N
        return loss, np.concatenate([gW.ravel(), gb])

    r = minimize(obj, np.zeros(n_out * (F + 1)), jac=True, method="L-BFGS-B",
                 options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000})
    W = r.x[: n_out * F].reshape(n_out, F)
    pred = (xs @ W.T + r.x[n_out * F:])
    pred = (pred[:, 0] > 0).astype(int) if n_out == 1 else pred.argmax(1)
    return r.x, r.fun, np.mean(pred == y)


x, y2, y3 = data()
for name, y, c in (("binary", y2, 2), ("three", y3, 3)):
    p, f, acc = fit(x, y, c)
    print(f"// {name}: objective {f:.15g}, train accuracy {acc:.15g}, class counts {np.bincount(y).tolist()}")
    print("{" + ", ".join(f"{v:.12g}" for v in p) + "}")
