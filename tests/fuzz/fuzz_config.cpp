// Fuzz target: the YAML config loader (Config::merge_yaml_string, which merge_yaml_file calls with the file's
// text) and the --set override parser, on the two real schemas (train-transformer and train-sae). Contract:
// any text is rejected with a husai::Error or accepted; an accepted config passes validate(), resolves into
// the typed run settings without error (transformer: its task and model validate), hashes, and its canonical
// JSON, merged back as YAML (JSON is YAML), gives the same values again.

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "husai/core/error.hpp"
#include "husai/io/config.hpp"
#include "husai/train/sae_run.hpp"
#include "husai/train/transformer_config.hpp"

namespace {

const husai::ConfigSchema& schema(int which) {
  static const husai::ConfigSchema transformer = husai::transformer_config_schema();
  static const husai::ConfigSchema sae = husai::sae_config_schema();
  return which == 0 ? transformer : sae;
}

// An accepted config must be usable as it is: what a subcommand does right after build_config().
void use(const husai::Config& c, int which) {
  if (which == 0) {
    const husai::TransformerRunConfig rc = husai::transformer_run_config(c);
    rc.task.validate();
    rc.model.validate();
    HUSAI_FUZZ_CHECK(rc.model.n_heads * rc.model.d_head > 0);
  }
  const std::string canonical = c.to_canonical_json();
  HUSAI_FUZZ_CHECK(c.hash().size() == 64);
  husai::Config again(schema(which));
  // Not validate()d: a cross-field rule may depend on which keys were given (train-sae's "steps or epochs,
  // not both"), and the canonical JSON gives every key.
  again.merge_yaml_string(canonical, "canonical.json");
  HUSAI_FUZZ_CHECK(again.to_canonical_json() == canonical);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (int which = 0; which < 2; ++which) {
    // As a config file.
    bool accepted = false;
    try {
      husai::Config c(schema(which));
      c.merge_yaml_string(text, "fuzz.yaml");
      c.validate();
      accepted = true;
      use(c, which);
    } catch (const husai::Error& e) {
      // A file that loaded and validated must not fail later; a rejection names the file or the key.
      if (accepted) std::fprintf(stderr, "accepted config failed later: %s\n", e.message().c_str());
      HUSAI_FUZZ_CHECK(!accepted);
      HUSAI_FUZZ_CHECK((e.file() && !e.file()->empty()) || e.key());
    }
    // As --set assignments, one per line (at most 8).
    accepted = false;
    try {
      husai::Config c(schema(which));
      size_t begin = 0;
      for (int n = 0; n < 8 && begin <= text.size(); ++n) {
        const size_t end = std::min(text.find('\n', begin), text.size());
        c.apply_override(text.substr(begin, end - begin));
        begin = end + 1;
      }
      c.validate();
      accepted = true;
      use(c, which);
    } catch (const husai::Error& e) {
      if (accepted) std::fprintf(stderr, "accepted overrides failed later: %s\n", e.message().c_str());
      HUSAI_FUZZ_CHECK(!accepted);
    }
  }
  return 0;
}
