#pragma once

// The writer (and reader) of a stability study (metrics/stability_study.hpp): stability.json, summary.md,
// pairs.csv, per_feature.csv and the figures. Layout in docs/formats.md ("husai compare").

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "husai/metrics/stability_convergence.hpp"
#include "husai/metrics/stability_study.hpp"

namespace husai {

inline constexpr int kStabilitySchemaVersion = 2;

// One sentence for a tested comparison: "above the rotation null (difference +0.1432, 95% BCa CI [...];
// two-sided exact permutation p = ..., Holm over 20 tests of the nulls family p = ...)".
std::string verdict_text(const GroupComparison& c, double confidence);

// The study's statistics as stability.json's `summary`, `groups`, `decision`, `surrogate` sections (plus
// pairs and per-feature summaries when the study holds them).
nlohmann::json study_to_json(const StabilityStudy& study);

// Reads the summary-level study back from a stability.json document (pairs and per-feature vectors stay
// empty). Throws husai::Error naming what is missing for documents of another schema.
StabilityStudy study_from_json(const nlohmann::json& doc);

// What the writer needs besides the study: compare's `inputs` and `settings` sections and any extra
// sections (feature_types, convergence, ...) that go into stability.json as given.
struct StabilityReportContext {
  nlohmann::json inputs = nlohmann::json::array();
  nlohmann::json settings = nlohmann::json::object();
  nlohmann::json extra_sections = nlohmann::json::object();
  std::string extra_markdown;  // appended to summary.md before the figures
  bool figures = true;
};

// Writes stability.json, summary.md, pairs.csv, per_feature.csv and (with figures) the PNG/SVG figures into
// `dir` (which must exist), each atomically; returns the document and appends the written names to `written`.
nlohmann::json write_stability_report(const StabilityStudy& study, const StabilityReportContext& context,
                                      const std::string& dir, std::vector<std::string>& written);

// Stability against training steps (metrics/stability_convergence.hpp) as JSON: `points` (step, fraction,
// pwmcc and matched_mean_cos with BCa CIs), `last_change` (estimate, ci_bca), `margin`, `plateaued`.
nlohmann::json convergence_to_json(const StabilityConvergence& c);

}  // namespace husai
