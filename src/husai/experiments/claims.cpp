#include "husai/experiments/claims.hpp"

#include <algorithm>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "husai/io/json_file.hpp"
#include "husai/io/registry.hpp"
#include "husai/io/sha256.hpp"

namespace husai {

namespace fs = std::filesystem;

nlohmann::json make_stability_claim(const std::string& id, const std::string& statement,
                                    const std::string& stability_file, const std::string& metric,
                                    const StabilitySummary& s, const std::vector<std::string>& holm_files) {
  return {{"id", id},
          {"statement", statement},
          {"kind", "above_null"},
          {"stability_file", stability_file},
          {"holm_files", holm_files.empty() ? std::vector<std::string>{stability_file} : holm_files},
          {"metric", metric},
          {"null", s.null_name},
          {"delta", s.delta},
          {"delta_lo", s.delta_lo},
          {"p_holm", s.p_holm},
          {"verdict", s.verdict_kind},
          {"holds", s.verdict_kind == "above"}};
}

AdaptiveChoice choose_adaptive_k(const nlohmann::json& search, const std::string& metric, double ev_floor) {
  AdaptiveChoice c;
  double best = 0;
  for (size_t i = 0; i < search.size(); ++i) {
    const nlohmann::json& r = search[i];
    const double ev = r.at("metrics").at("mean").at("ev_held_out").get<double>();
    if (!(ev >= ev_floor)) continue;
    const int64_t k = r.at("k").get<int64_t>();
    c.eligible.push_back(k);
    const double lcb = stability_from_json(r.at("stability").at(metric)).delta_lo;
    if (!c.k || lcb > best || (lcb == best && k < *c.k)) {
      c.k = k;
      c.index = i;
      best = lcb;
    }
  }
  return c;
}

namespace {

// sha256 of each output recorded in the run's manifest.
std::map<std::string, std::string> manifest_hashes(const fs::path& run_dir) {
  std::map<std::string, std::string> out;
  const nlohmann::json m = read_json_file((run_dir / "manifest.json").string());
  for (const auto& f : m.at("outputs"))
    out[f.at("path").get<std::string>()] = f.at("sha256").get<std::string>();
  return out;
}

AuditLine audit_claim(const RunRecord& run, const nlohmann::json& results, const nlohmann::json& claim,
                      const std::map<std::string, std::string>& hashes) {
  AuditLine line{run.experiment, run.id, claim.value("id", "?"), claim.value("statement", ""),
                 "cannot check", ""};
  const fs::path dir = run.run_dir;
  const std::string kind = claim.value("kind", "");
  const bool recorded = claim.value("holds", false);
  if (kind == "above_null") {
    const std::string file = claim.at("stability_file").get<std::string>();
    const fs::path full = dir / file;
    if (!fs::exists(full)) {
      line.detail = file + " is missing";
      return line;
    }
    const auto it = hashes.find(file);
    if (it == hashes.end() || it->second != sha256_file_hex(full.string())) {
      line.detail = file + " no longer matches the sha256 in manifest.json";
      return line;
    }
    std::vector<std::string> family = {file};
    if (claim.contains("holm_files")) family = claim.at("holm_files").get<std::vector<std::string>>();
    for (const std::string& f : family) {
      if (!fs::exists(dir / f)) {
        line.detail = f + " is missing";
        return line;
      }
    }
    const auto pos = std::find(family.begin(), family.end(), file);
    if (pos == family.end()) family.push_back(file);
    const std::vector<StabilityStudy> studies = load_experiment_studies(dir.string(), family, nullptr);
    const StabilitySummary s = summarize(
        studies[static_cast<size_t>(std::find(family.begin(), family.end(), file) - family.begin())],
        claim.at("metric").get<std::string>());
    const bool holds = s.verdict_kind == "above";
    line.status = holds ? "holds" : recorded ? "no longer holds" : "does not hold";
    line.detail =
        fmt::format("re-derived from {} (Holm over {} tests): {} {}{}", file, s.holm_family_size, s.metric,
                    s.verdict, holds == recorded ? "" : "; the run had recorded the opposite");
    return line;
  }
  if (kind == "adaptive_choice") {
    // Re-derive each candidate's lower bound from its stored stability.json, then the choice.
    nlohmann::json search = results.at("search");
    const std::string metric = claim.at("metric").get<std::string>();
    for (auto& r : search) {
      const fs::path full = dir / r.at("stability_file").get<std::string>();
      if (!fs::exists(full)) {
        line.detail = full.string() + " is missing";
        return line;
      }
      r["stability"][metric] = to_json(summarize_stability(read_json_file(full.string()), metric));
    }
    const AdaptiveChoice c = choose_adaptive_k(search, metric, claim.at("ev_floor").get<double>());
    const int64_t recorded_k = claim.at("chosen_k").get<int64_t>();
    line.status = c.k && *c.k == recorded_k ? "holds" : "no longer holds";
    line.detail = c.k ? fmt::format("the stored search results choose k = {} (recorded {})", *c.k, recorded_k)
                      : "no candidate clears the EV floor any more";
    return line;
  }
  if (kind == "gate") {
    line.status = recorded ? "holds" : "does not hold";
    line.detail = claim.value("detail", "");
    return line;
  }
  line.detail = "unknown claim kind '" + kind + "'";
  return line;
}

}  // namespace

AuditReport run_audit(const std::string& root) {
  AuditReport report;
  const Registry reg(root);
  std::vector<std::string> experiments;
  for (const RunRecord& r : reg.list_runs()) {
    if (std::find(experiments.begin(), experiments.end(), r.experiment) == experiments.end()) {
      experiments.push_back(r.experiment);
    }
  }
  std::sort(experiments.begin(), experiments.end());
  report.markdown =
      "# Audit\n\nEach headline claim of the latest completed run of each experiment (and of each variant, "
      "e.g. adaptive-l0's matched control), re-derived from "
      "the stored result files (checked against their manifest sha256).\n\n"
      "| experiment | run | claim | status | detail |\n|---|---|---|---|---|\n";
  for (const std::string& e : experiments) {
    // The newest completed run of each variant of the experiment (results.json "variant": adaptive-l0's
    // matched control is "control"; a run without one, or whose results cannot be read, is the main study).
    std::vector<std::pair<std::string, RunRecord>> chosen;
    for (const RunRecord& r : reg.list_runs(e)) {
      if (r.status != "completed") continue;
      std::string variant;
      try {
        variant = read_json_file((fs::path(r.run_dir) / "results.json").string()).value("variant", "");
      } catch (const std::exception&) {
        variant.clear();
      }
      if (std::none_of(chosen.begin(), chosen.end(), [&](const auto& c) { return c.first == variant; })) {
        chosen.emplace_back(variant, r);
      }
    }
    std::sort(chosen.begin(), chosen.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<AuditLine> lines;
    for (const auto& [variant, run] : chosen) {
      const std::string label = variant.empty() ? e : e + " (" + variant + ")";
      const fs::path dir = run.run_dir;
      const size_t first = lines.size();
      try {
        const auto hashes = manifest_hashes(dir);
        const nlohmann::json results = read_json_file((dir / "results.json").string());
        if (!results.contains("claims") || results["claims"].empty()) {
          lines.push_back({e, run.id, "-", "", "cannot check", "the run states no claims"});
        }
        for (const auto& claim : results.value("claims", nlohmann::json::array())) {
          try {
            lines.push_back(audit_claim(run, results, claim, hashes));
          } catch (const std::exception& ex) {
            lines.push_back(
                {e, run.id, claim.value("id", "?"), claim.value("statement", ""), "cannot check", ex.what()});
          }
        }
      } catch (const std::exception& ex) {
        lines.push_back({e, run.id, "-", "", "cannot check", ex.what()});
      }
      for (size_t i = first; i < lines.size(); ++i) lines[i].experiment = label;
    }
    for (const AuditLine& l : lines) {
      report.markdown +=
          fmt::format("| {} | {} | {} | {} | {} |\n", l.experiment, l.run_id, l.claim_id, l.status, l.detail);
      report.lines.push_back(l);
    }
  }
  if (report.lines.empty()) report.markdown += "| - | - | - | - | no completed runs in this ROOT |\n";
  return report;
}

}  // namespace husai
