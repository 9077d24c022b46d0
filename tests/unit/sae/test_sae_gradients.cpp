// Finite-difference gradient checks (double) of every SAE architecture's loss, AuxK included, and of the
// JumpReLU threshold against its documented straight-through surrogate.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gradcheck.hpp"
#include "husai/sae/architecture.hpp"
#include "husai/sae/sae.hpp"

namespace husai {
namespace {

constexpr int64_t kD = 6;
constexpr int64_t kL = 12;
constexpr int64_t kB = 5;

struct Problem {
  SaeConfig cfg;
  SaeLayout layout;
  std::vector<double> params, x;
  std::vector<double> target;  // empty: an SAE (the decoder reconstructs x); else a transcoder's target
  std::vector<uint8_t> dead;
};

Problem make_problem(std::string_view arch) {
  Problem pr;
  pr.cfg.arch = &sae_architecture(arch);
  pr.cfg.d_in = kD;
  pr.cfg.d_sae = kL;
  pr.cfg.k = 3;
  pr.cfg.k_aux = 4;
  pr.cfg.aux_coefficient = 0.5;
  pr.cfg.l1_coefficient = 0.3;
  pr.cfg.l1_warmup_steps = 4;
  pr.cfg.l0_coefficient = 0.2;
  pr.cfg.bandwidth = 0.5;
  pr.cfg.group_sizes = {3, 4, 5};
  pr.layout = make_sae_layout(pr.cfg);
  pr.params.resize(static_cast<size_t>(pr.layout.total));
  gradcheck::fill_normal(pr.params, 11, 0.5);
  if (arch == "jumprelu") {
    for (int64_t i = 0; i < pr.layout.n_extra; ++i) {
      pr.params[static_cast<size_t>(pr.layout.extra + i)] = std::log(0.2 + 0.05 * static_cast<double>(i));
    }
  }
  pr.x.resize(static_cast<size_t>(kB * kD));
  gradcheck::fill_normal(pr.x, 12, 1.0);
  pr.dead.assign(static_cast<size_t>(kL), 0);
  for (int64_t i : {1, 4, 5, 8, 9, 11}) pr.dead[static_cast<size_t>(i)] = 1;
  return pr;
}

// Checks every parameter (but JumpReLU's log_threshold, whose gradient is a straight-through estimate)
// against central differences of the loss itself.
void check_all(Problem& pr, const std::string& name, bool with_dead) {
  SaeWorkspace<double> ws;
  SaeBatch<double> batch{pr.x.data(), kB, 2, with_dead ? pr.dead.data() : nullptr};
  if (!pr.target.empty()) batch.target = pr.target.data();
  std::vector<double> grads(static_cast<size_t>(pr.layout.total));
  const SaeLossParts base = sae_loss_backward(pr.cfg, pr.layout, pr.params.data(), grads.data(), batch, ws);
  ASSERT_TRUE(std::isfinite(base.loss));
  if (with_dead) {
    ASSERT_GT(base.aux, 0.0) << name << ": AuxK inactive";
  }
  ASSERT_GT(base.l0, 0.0);
  // AuxK's residual is a stop-gradient input: hold it at its value at the base point.
  ws.freeze_aux_residual = true;
  auto f = [&] {
    return sae_loss_backward<double>(pr.cfg, pr.layout, pr.params.data(), nullptr, batch, ws).loss;
  };
  const int64_t n = pr.cfg.arch->name == "jumprelu" ? pr.layout.extra : pr.layout.total;
  gradcheck::expect_gradient_matches(name, f, pr.params.data(), grads.data(), n, 1, 1e-6, 1e-5);
}

TEST(SaeGradients, ReluL1WithWarmup) {
  Problem pr = make_problem("relu");
  check_all(pr, "relu", false);
}

TEST(SaeGradients, TopK) {
  Problem pr = make_problem("topk");
  check_all(pr, "topk", false);
}

TEST(SaeGradients, TopKWithAuxK) {
  Problem pr = make_problem("topk");
  check_all(pr, "topk_auxk", true);
}

TEST(SaeGradients, BatchTopKWithAuxK) {
  Problem pr = make_problem("batchtopk");
  check_all(pr, "batchtopk_auxk", true);
}

TEST(SaeGradients, MatryoshkaWithAuxK) {
  Problem pr = make_problem("matryoshka");
  check_all(pr, "matryoshka_auxk", true);
}

// Gated: the magnitude path, the gate path (L1 with warm-up and the auxiliary loss through the frozen
// decoder), and the shared W_enc; r_mag and b_mag included.
TEST(SaeGradients, GatedWithWarmup) {
  Problem pr = make_problem("gated");
  check_all(pr, "gated", false);
}

TEST(SaeGradients, GatedNoBdecOnInput) {
  Problem pr = make_problem("gated");
  pr.cfg.apply_b_dec_to_input = false;
  gradcheck::fill_normal(pr.params, 13, 0.8);  // r_mag away from 0 too
  check_all(pr, "gated_no_bdec_input", false);
}

TEST(SaeGradients, NoBdecOnInput) {
  Problem pr = make_problem("topk");
  pr.cfg.apply_b_dec_to_input = false;
  check_all(pr, "topk_no_bdec_input", true);
}

// Transcoders: every architecture's decoder trained towards another site's rows (y != x), the input not
// centred by b_dec (it lives in the target's space), as train-sae --target-activations trains them. A
// loss that still compared x_hat with x would fail here: the target is independent of x.
TEST(SaeGradients, EveryArchitectureAsTranscoder) {
  for (const SaeArchitecture* arch : sae_architectures()) {
    Problem pr = make_problem(arch->name);
    pr.cfg.apply_b_dec_to_input = false;
    pr.target.resize(pr.x.size());
    gradcheck::fill_normal(pr.target, 14, 1.0);
    const bool auxk = arch->name == "topk" || arch->name == "batchtopk" || arch->name == "matryoshka";
    check_all(pr, std::string(arch->name) + "_transcoder", auxk);
    // The loss is of the target: against y = x it differs.
    SaeWorkspace<double> ws;
    SaeBatch<double> with_target{pr.x.data(), kB, 2, nullptr, pr.target.data()};
    SaeBatch<double> as_sae{pr.x.data(), kB, 2, nullptr};
    const double mse_t =
        sae_loss_backward<double>(pr.cfg, pr.layout, pr.params.data(), nullptr, with_target, ws).mse;
    const double mse_x =
        sae_loss_backward<double>(pr.cfg, pr.layout, pr.params.data(), nullptr, as_sae, ws).mse;
    EXPECT_GT(std::abs(mse_t - mse_x), 1e-3) << arch->name;
  }
}

// JumpReLU: exact gradients for every parameter but the threshold; the threshold's straight-through gradient
// equals the exact gradient of the surrogate documented in jumprelu.cpp, computed here independently.
void check_jumprelu(bool tanh_penalty) {
  Problem pr = make_problem("jumprelu");
  pr.cfg.tanh_penalty = tanh_penalty;
  const std::string name = tanh_penalty ? "jumprelu_tanh" : "jumprelu_step";
  check_all(pr, name, false);

  SaeWorkspace<double> ws;
  SaeBatch<double> batch{pr.x.data(), kB, 2, nullptr};
  std::vector<double> grads(static_cast<size_t>(pr.layout.total));
  sae_loss_backward(pr.cfg, pr.layout, pr.params.data(), grads.data(), batch, ws);
  const SaeView<double> p = make_sae_view(pr.layout, pr.params.data());
  // z, f, x_hat and G = d loss / d f at the base point.
  std::vector<double> z(kB * kL), f(kB * kL), xhat(kB * kD), G(kB * kL), norm(kL), theta0(kL);
  for (int64_t i = 0; i < kL; ++i) {
    double s = 0;
    for (int64_t d = 0; d < kD; ++d) s += p.W_dec[i * kD + d] * p.W_dec[i * kD + d];
    norm[i] = std::sqrt(s);
    theta0[i] = std::exp(p.extra[i]);
  }
  for (int64_t r = 0; r < kB; ++r) {
    for (int64_t i = 0; i < kL; ++i) {
      double s = p.b_enc[i];
      for (int64_t d = 0; d < kD; ++d) s += (pr.x[r * kD + d] - p.b_dec[d]) * p.W_enc[d * kL + i];
      z[r * kL + i] = s;
      f[r * kL + i] = s > theta0[i] ? s : 0.0;
    }
    for (int64_t d = 0; d < kD; ++d) {
      double s = p.b_dec[d];
      for (int64_t i = 0; i < kL; ++i) s += f[r * kL + i] * p.W_dec[i * kD + d];
      xhat[r * kD + d] = s;
    }
  }
  const double coef = pr.cfg.l0_coefficient / kB;
  int in_kernel = 0;
  for (int64_t r = 0; r < kB; ++r) {
    for (int64_t i = 0; i < kL; ++i) {
      double s = 0;
      for (int64_t d = 0; d < kD; ++d)
        s += 2.0 / kB * (xhat[r * kD + d] - pr.x[r * kD + d]) * p.W_dec[i * kD + d];
      if (tanh_penalty) {
        const double t = std::tanh(pr.cfg.tanh_scale * f[r * kL + i] * norm[i]);
        s += coef * pr.cfg.tanh_scale * norm[i] * (1 - t * t);
      }
      G[r * kL + i] = s;
      in_kernel += std::abs(z[r * kL + i] - theta0[i]) < 0.5 * pr.cfg.bandwidth ? 1 : 0;
    }
  }
  ASSERT_GT(in_kernel, 3) << "too few pre-activations inside the kernel to test anything";
  const double eps = pr.cfg.bandwidth;
  auto h_eps = [&](double u) { return std::clamp(u / eps + 0.5, 0.0, 1.0); };
  auto surrogate = [&] {
    double s = 0;
    for (int64_t r = 0; r < kB; ++r) {
      for (int64_t i = 0; i < kL; ++i) {
        const double th = std::exp(p.extra[i]);
        const double h = h_eps(z[r * kL + i] - th);
        s += G[r * kL + i] * theta0[i] * h;
        if (!tanh_penalty) s += coef * h;
      }
    }
    return s;
  };
  gradcheck::expect_gradient_matches(name + "_threshold_surrogate", surrogate, p.extra,
                                     grads.data() + pr.layout.extra, kL, 1, 1e-6, 1e-5);
}

TEST(SaeGradients, JumpReluStepSurrogate) {
  check_jumprelu(false);
}
TEST(SaeGradients, JumpReluTanhSurrogate) {
  check_jumprelu(true);
}

}  // namespace
}  // namespace husai
