#pragma once

// Headline claims and `husai audit`. An experiment's results.json lists its claims; each names the stored
// file it rests on (a compare stability.json inside the run folder) and what it asserts. The audit
// re-derives every claim from those stored files (not from the summary numbers next to it), checks the
// files still match the manifest's sha256, and prints which claims still hold.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/experiments/study.hpp"

namespace husai {

// {id, statement, kind: "above_null", stability_file, holm_files, metric, null, delta, delta_lo, p_holm,
// verdict, holds: verdict == "above"}. `holm_files` are the stability.json files (relative to the run folder)
// whose tests were Holm-adjusted together with this one (load_experiment_studies); empty = this file alone.
// The audit re-derives the verdict the same way.
nlohmann::json make_stability_claim(const std::string& id, const std::string& statement,
                                    const std::string& stability_file, const std::string& metric,
                                    const StabilitySummary& s,
                                    const std::vector<std::string>& holm_files = {});

// Adaptive-L0 choice over search results (each {k, metrics.mean.ev_held_out, stability[metric]}): the
// largest delta_lo among candidates with EV >= floor; ties go to the smaller k.
struct AdaptiveChoice {
  std::optional<int64_t> k;
  size_t index = 0;
  std::vector<int64_t> eligible;
};
AdaptiveChoice choose_adaptive_k(const nlohmann::json& search, const std::string& metric, double ev_floor);

struct AuditLine {
  std::string experiment, run_id, claim_id, statement;
  // "holds" | "no longer holds" (recorded as holding, re-derivation says not) | "does not hold" (recorded as
  // not holding and still does not) | "cannot check"
  std::string status;
  std::string detail;
};
struct AuditReport {
  std::vector<AuditLine> lines;
  std::string markdown;
};

// Audits the latest completed run of each experiment in ROOT's registry, and of each variant of it that
// results.json names ("variant": adaptive-l0 writes "control" for a single-candidate run), so that a
// matched control does not hide the study it controls. Lines of a variant say "EXPERIMENT (VARIANT)".
AuditReport run_audit(const std::string& root);

}  // namespace husai
