// The one list of SAE architectures: one registration line each (declared in the architecture's own file).

#include <algorithm>
#include <set>

#include "husai/core/error.hpp"
#include "husai/io/config.hpp"
#include "husai/sae/architecture.hpp"

namespace husai {

const SaeArchitecture& relu_architecture();
const SaeArchitecture& topk_architecture();
const SaeArchitecture& batchtopk_architecture();
const SaeArchitecture& jumprelu_architecture();
const SaeArchitecture& matryoshka_architecture();
const SaeArchitecture& gated_architecture();

const std::vector<const SaeArchitecture*>& sae_architectures() {
  static const std::vector<const SaeArchitecture*> all = {
      &relu_architecture(),     &topk_architecture(),       &batchtopk_architecture(),
      &jumprelu_architecture(), &matryoshka_architecture(), &gated_architecture(),
  };
  return all;
}

const SaeArchitecture& default_sae_architecture() {
  return topk_architecture();
}

std::string sae_architecture_names(std::string_view separator) {
  std::string out;
  for (const SaeArchitecture* a : sae_architectures()) {
    if (!out.empty()) out += separator;
    out += a->name;
  }
  return out;
}

const SaeArchitecture& sae_architecture(std::string_view name) {
  for (const SaeArchitecture* a : sae_architectures()) {
    if (a->name == name) return *a;
  }
  throw Error("unknown SAE architecture '" + std::string(name) + "' (known: " + sae_architecture_names() +
              ")");
}

const std::vector<const SaeInferenceKind*>& sae_inference_kinds() {
  static const std::vector<const SaeInferenceKind*> all = [] {
    std::vector<const SaeInferenceKind*> kinds;
    for (const SaeArchitecture* a : sae_architectures()) {
      if (std::find(kinds.begin(), kinds.end(), a->inference) == kinds.end()) kinds.push_back(a->inference);
    }
    return kinds;
  }();
  return all;
}

const SaeInferenceKind* find_sae_inference_kind(std::string_view name) {
  for (const SaeInferenceKind* k : sae_inference_kinds()) {
    if (k->name == name) return k;
  }
  return nullptr;
}

const SaeInferenceKind* find_sae_transcoder_kind(std::string_view name) {
  for (const SaeInferenceKind* k : sae_inference_kinds()) {
    if (!k->transcoder_name.empty() && k->transcoder_name == name) return k;
  }
  return nullptr;
}

const SaeArchitecture* sae_architecture_exporting(std::string_view inference_name) {
  // The architecture of the same name first (jumprelu, not batchtopk, for a SAELens jumprelu folder).
  for (const SaeArchitecture* a : sae_architectures()) {
    if (a->name == inference_name && a->inference->name == inference_name) return a;
  }
  for (const SaeArchitecture* a : sae_architectures()) {
    if (a->inference->name == inference_name) return a;
  }
  return nullptr;
}

void declare_sae_architecture_keys(ConfigSchema& schema) {
  std::set<std::string_view> done;
  for (const SaeArchitecture* a : sae_architectures()) {
    for (const SaeKey& key : a->keys) {
      if (!done.insert(key.path).second) continue;
      FieldSpec& spec = key.declare(schema);
      std::string users;
      for (const SaeArchitecture* b : sae_architectures()) {
        for (const SaeKey& k : b->keys) {
          if (k.path == key.path) users += (users.empty() ? "" : ", ") + std::string(b->name);
        }
      }
      spec.help += " [" + users + "]";
    }
  }
}

void apply_sae_architecture_keys(const Config& config, SaeConfig& sae) {
  std::set<std::string_view> done;
  for (const SaeArchitecture* a : sae_architectures()) {
    for (const SaeKey& key : a->keys) {
      if (done.insert(key.path).second) key.apply(config, sae);
    }
  }
}

}  // namespace husai
