#include "husai/io/config.hpp"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "husai/core/error.hpp"

namespace husai {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// A schema shaped like a real subcommand's, covering every field kind.
ConfigSchema make_schema() {
  ConfigSchema s;
  s.add_int("seed", 0, "RNG seed.").min(0);
  s.add_string("run.name", "run", "Name used for the output directory.");
  s.add_int("model.d_model", 128, "Residual stream width.").min(1);
  s.add_int("model.n_heads", 4, "Attention heads.").min(1);
  s.add_int("model.d_head", nullptr, "Per-head width; null = d_model / n_heads.").min(1).nullable();
  s.add_float("training.lr", 1e-3, "Peak learning rate.").greater_than(0).max(1);
  s.add_float_list("training.betas", {0.9, 0.999}, "AdamW betas.").length(2).min(0).less_than(1);
  s.add_float("training.weight_decay", 0.0, "AdamW weight decay.").min(0);
  s.add_int_or_string("training.batch_size", "full", "full", "Batch size, or 'full' for full batch.").min(1);
  s.add_enum("training.optimizer", "adamw", {"adam", "adamw", "sgd"}, "Optimiser.");
  s.add_bool("training.shuffle", true, "Shuffle each epoch.");
  s.add_int_list("eval.checkpoints", json::array({100, 1000}), "Steps at which to evaluate.").min(0);
  s.add_check([](const Config& c) {
    if (c.get_int("model.d_model") % c.get_int("model.n_heads") != 0) {
      c.fail("model.d_model must be divisible by model.n_heads", {"model.d_model", "model.n_heads"});
    }
  });
  return s;
}

// Runs `f`, which must throw husai::Error, and returns the error for inspection.
template <class F>
Error expect_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected husai::Error";
  return Error("<no error thrown>");
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_TRUE(contains((haystack), (needle))) << "'" << (haystack) << "' lacks '" << (needle) << "'"

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "husai_cfg_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Writes a YAML fixture and returns its path.
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  Config cfg_{make_schema()};
  fs::path dir_;
};

TEST_F(ConfigTest, DefaultsFillResolvedTree) {
  EXPECT_EQ(cfg_.get_int("seed"), 0);
  EXPECT_EQ(cfg_.get_string("run.name"), "run");
  EXPECT_EQ(cfg_.get_int("model.d_model"), 128);
  EXPECT_TRUE(cfg_.is_null("model.d_head"));
  EXPECT_DOUBLE_EQ(cfg_.get_double("training.lr"), 1e-3);
  EXPECT_EQ(cfg_.get_double_list("training.betas"), (std::vector<double>{0.9, 0.999}));
  EXPECT_EQ(cfg_.get_string("training.batch_size"), "full");
  EXPECT_EQ(cfg_.get_string("training.optimizer"), "adamw");
  EXPECT_TRUE(cfg_.get_bool("training.shuffle"));
  EXPECT_EQ(cfg_.get_int_list("eval.checkpoints"), (std::vector<int64_t>{100, 1000}));
  // Nested, with float fields stored as floats even when the default was written as an int literal.
  EXPECT_TRUE(cfg_.resolved()["training"]["weight_decay"].is_number_float());
  EXPECT_EQ(cfg_.resolved()["model"]["n_heads"], 4);
  EXPECT_EQ(cfg_.source("training.lr").kind, ValueSource::Kind::kDefault);
  EXPECT_EQ(cfg_.source("training.lr").label(), "default");
  EXPECT_NO_THROW(cfg_.validate());
}

TEST_F(ConfigTest, FileMergeOverridesDefaultsAndRecordsSource) {
  const std::string path = write("a.yaml",
                                 "# experiment\n"
                                 "training:\n"
                                 "  lr: 1e-2\n"
                                 "  betas: [0.8, 0.95]\n"
                                 "  batch_size: 64\n"
                                 "  optimizer: sgd\n"
                                 "  shuffle: false\n"
                                 "model:\n"
                                 "  d_head: 32\n"
                                 "eval:\n"
                                 "  checkpoints:\n"
                                 "    - 1\n"
                                 "    - 2\n"
                                 "run.name: 2024\n");
  cfg_.merge_yaml_file(path);
  EXPECT_DOUBLE_EQ(cfg_.get_double("training.lr"), 0.01);
  EXPECT_EQ(cfg_.get_double_list("training.betas"), (std::vector<double>{0.8, 0.95}));
  EXPECT_EQ(cfg_.get_int("training.batch_size"), 64);
  EXPECT_EQ(cfg_.get_string("training.optimizer"), "sgd");
  EXPECT_FALSE(cfg_.get_bool("training.shuffle"));
  EXPECT_EQ(cfg_.get_int("model.d_head"), 32);
  EXPECT_EQ(cfg_.get_int_list("eval.checkpoints"), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(cfg_.get_string("run.name"), "2024");  // a plain scalar is fine for a string key
  EXPECT_EQ(cfg_.get_int("model.d_model"), 128);   // untouched keys keep defaults
  EXPECT_EQ(cfg_.source("training.lr").kind, ValueSource::Kind::kFile);
  EXPECT_EQ(cfg_.source("training.lr").label(), path + ":3");
  EXPECT_EQ(cfg_.source("model.d_model").label(), "default");
}

TEST_F(ConfigTest, LaterFilesWinAndEmptyFilesChangeNothing) {
  cfg_.merge_yaml_file(write("a.yaml", "training:\n  lr: 0.5\n  weight_decay: 0.1\n"));
  cfg_.merge_yaml_file(write("b.yaml", "training:\n  lr: 0.25\n"));
  const std::string before = cfg_.to_canonical_json();
  cfg_.merge_yaml_file(write("empty.yaml", ""));
  cfg_.merge_yaml_file(write("comments.yaml", "# nothing here\n\n"));
  cfg_.merge_yaml_file(write("empty_section.yaml", "training:\n  # lr: 3\n"));
  EXPECT_EQ(cfg_.to_canonical_json(), before);
  EXPECT_DOUBLE_EQ(cfg_.get_double("training.lr"), 0.25);
  EXPECT_DOUBLE_EQ(cfg_.get_double("training.weight_decay"), 0.1);
}

TEST_F(ConfigTest, FloatsAcceptIntsAndScientificNotation) {
  cfg_.merge_yaml_file(write("a.yaml", "training:\n  lr: 1\n  weight_decay: 5E-4\n  betas: [0, 0.5]\n"));
  EXPECT_TRUE(cfg_.get("training.lr").is_number_float());
  EXPECT_DOUBLE_EQ(cfg_.get_double("training.lr"), 1.0);
  EXPECT_DOUBLE_EQ(cfg_.get_double("training.weight_decay"), 5e-4);
  EXPECT_TRUE(cfg_.get("training.betas")[0].is_number_float());
}

TEST_F(ConfigTest, IntegralFloatAcceptedForIntButFractionRejected) {
  cfg_.merge_yaml_file(write("a.yaml", "model:\n  d_model: 1e2\n"));
  EXPECT_EQ(cfg_.get_int("model.d_model"), 100);
  EXPECT_TRUE(cfg_.get("model.d_model").is_number_integer());

  const std::string path = write("b.yaml", "model:\n  n_heads: 4\n  d_model: 1.5\n");
  const Error e = expect_error([&] { cfg_.merge_yaml_file(path); });
  EXPECT_EQ(e.file(), path);
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.key(), "model.d_model");
  EXPECT_CONTAINS(e.message(), "expected int >= 1, got non-integral number '1.5'");
}

TEST_F(ConfigTest, UnknownKeyReportsLineAndSuggestion) {
  const std::string path = write("a.yaml", "training:\n  lr: 0.1\n  lrr: 0.2\n");
  const Error e = expect_error([&] { cfg_.merge_yaml_file(path); });
  EXPECT_EQ(e.file(), path);
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.key(), "training.lrr");
  EXPECT_EQ(e.message(), path + ":3: key 'training.lrr': unknown key (did you mean 'training.lr'?)");
}

TEST_F(ConfigTest, UnknownSectionAndWrongSectionSuggestions) {
  const Error e1 = expect_error([&] { cfg_.merge_yaml_file(write("a.yaml", "traning:\n  lr: 0.1\n")); });
  EXPECT_EQ(e1.line(), 1);
  EXPECT_EQ(e1.key(), "traning");
  EXPECT_CONTAINS(e1.message(), "did you mean 'training'?");

  // The right key in the wrong section is far by edit distance but still worth pointing out.
  const Error e2 =
      expect_error([&] { cfg_.merge_yaml_file(write("b.yaml", "seed: 1\nmodel:\n  lr: 0.1\n")); });
  EXPECT_EQ(e2.line(), 3);
  EXPECT_CONTAINS(e2.message(), "did you mean 'training.lr'?");

  const Error e3 = expect_error([&] { cfg_.merge_yaml_file(write("c.yaml", "zzzzzz: 1\n")); });
  EXPECT_EQ(e3.key(), "zzzzzz");
  EXPECT_FALSE(contains(e3.message(), "did you mean"));
}

TEST_F(ConfigTest, WrongTypeNamesExpectedKindAndValueSeen) {
  const std::string path = write("a.yaml", "seed: 3\ntraining:\n  lr: abc\n");
  const Error e = expect_error([&] { cfg_.merge_yaml_file(path); });
  EXPECT_EQ(e.file(), path);
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.key(), "training.lr");
  EXPECT_CONTAINS(e.message(), "expected float in (0, 1], got string 'abc'");

  // Quoting makes a string, even if it looks like a number.
  const Error e2 = expect_error([&] { cfg_.merge_yaml_file(write("b.yaml", "training:\n  lr: \"0.1\"\n")); });
  EXPECT_CONTAINS(e2.message(), "got string '0.1'");

  const Error e3 =
      expect_error([&] { cfg_.merge_yaml_file(write("c.yaml", "training:\n  shuffle: yes\n")); });
  EXPECT_CONTAINS(e3.message(), "expected bool (true/false), got string 'yes'");

  const Error e4 = expect_error([&] { cfg_.merge_yaml_file(write("d.yaml", "training:\n  betas: 0.9\n")); });
  EXPECT_CONTAINS(e4.message(), "expected list of 2 floats, each in [0, 1), got float '0.9'");
}

TEST_F(ConfigTest, BoolIsNotANumber) {
  const std::string path = write("a.yaml", "training:\n  lr: true\n");
  const Error e = expect_error([&] { cfg_.merge_yaml_file(path); });
  EXPECT_EQ(e.line(), 2);
  EXPECT_CONTAINS(e.message(), "expected float in (0, 1], got bool 'true'");
  const Error e2 = expect_error([&] { cfg_.set("model.d_model", true, "--d-model"); });
  EXPECT_CONTAINS(e2.message(), "expected int >= 1, got bool 'true'");
}

TEST_F(ConfigTest, OutOfRangeNamesValueAndAllowedRange) {
  const std::string path = write("a.yaml", "training:\n  lr: 2\n");
  const Error e = expect_error([&] { cfg_.merge_yaml_file(path); });
  EXPECT_EQ(e.line(), 2);
  EXPECT_EQ(e.key(), "training.lr");
  EXPECT_CONTAINS(e.message(), "value 2 is out of range: must be in (0, 1]");

  const Error e2 = expect_error([&] { cfg_.merge_yaml_file(write("b.yaml", "training:\n  lr: 0\n")); });
  EXPECT_CONTAINS(e2.message(), "value 0 is out of range: must be in (0, 1]");

  const Error e3 = expect_error([&] { cfg_.merge_yaml_file(write("c.yaml", "model:\n  d_model: 0\n")); });
  EXPECT_CONTAINS(e3.message(), "value 0 is out of range: must be >= 1");

  // Per-element bounds on lists, reported with the element's own line.
  const Error e4 = expect_error(
      [&] { cfg_.merge_yaml_file(write("d.yaml", "training:\n  betas:\n    - 0.9\n    - 1.0\n")); });
  EXPECT_EQ(e4.line(), 4);
  EXPECT_EQ(e4.key(), "training.betas");
  EXPECT_CONTAINS(e4.message(), "element [1]: value 1.0 is out of range: must be in [0, 1)");

  const Error e5 =
      expect_error([&] { cfg_.merge_yaml_file(write("e.yaml", "training:\n  betas: [0.9]\n")); });
  EXPECT_CONTAINS(e5.message(), "expected list of 2 floats, each in [0, 1), got 1 element");

  const Error e6 =
      expect_error([&] { cfg_.merge_yaml_file(write("f.yaml", "eval:\n  checkpoints: [1, 2.5]\n")); });
  EXPECT_CONTAINS(e6.message(), "element [1]: expected int >= 0, got non-integral number '2.5'");

  const Error e7 =
      expect_error([&] { cfg_.merge_yaml_file(write("g.yaml", "seed: 99999999999999999999\n")); });
  EXPECT_CONTAINS(e7.message(), "does not fit in a 64-bit integer");

  const Error e8 =
      expect_error([&] { cfg_.merge_yaml_file(write("h.yaml", "training:\n  weight_decay: .inf\n")); });
  EXPECT_CONTAINS(e8.message(), "non-finite");
}

TEST_F(ConfigTest, BadEnumListsAllowedValues) {
  const std::string path = write("a.yaml", "training:\n  optimizer: adm\n");
  const Error e = expect_error([&] { cfg_.merge_yaml_file(path); });
  EXPECT_EQ(e.line(), 2);
  EXPECT_EQ(e.key(), "training.optimizer");
  EXPECT_CONTAINS(e.message(), "'adm' is not an allowed value; allowed: 'adam', 'adamw', 'sgd'");
  EXPECT_CONTAINS(e.message(), "did you mean 'adam'?");
}

TEST_F(ConfigTest, YamlSyntaxErrorHasLine) {
  const std::string path = write("a.yaml", "seed: 1\ntraining:\n  lr: [0.1, 0.2\nmodel: 3\n");
  const Error e = expect_error([&] { cfg_.merge_yaml_file(path); });
  EXPECT_EQ(e.file(), path);
  ASSERT_TRUE(e.line().has_value());
  EXPECT_GE(*e.line(), 3);
  EXPECT_CONTAINS(e.message(), "YAML syntax error");

  const Error e2 = expect_error([&] { cfg_.merge_yaml_file(write("b.yaml", "seed: 1\n bad: 2\n")); });
  EXPECT_EQ(e2.line(), 2);
  EXPECT_CONTAINS(e2.message(), "YAML syntax error");
}

TEST_F(ConfigTest, MissingFileIsNamed) {
  const std::string path = (dir_ / "nope.yaml").string();
  const Error e = expect_error([&] { cfg_.merge_yaml_file(path); });
  EXPECT_EQ(e.file(), path);
  EXPECT_CONTAINS(e.message(), path);
  EXPECT_CONTAINS(e.message(), "not found");

  const Error e2 = expect_error([&] { cfg_.merge_yaml_file(dir_.string()); });
  EXPECT_CONTAINS(e2.message(), "directory");
}

TEST_F(ConfigTest, SectionScalarConfusion) {
  const Error e1 = expect_error([&] { cfg_.merge_yaml_file(write("a.yaml", "seed: 1\ntraining: 0.1\n")); });
  EXPECT_EQ(e1.line(), 2);
  EXPECT_EQ(e1.key(), "training");
  EXPECT_CONTAINS(e1.message(), "'training' is a section (keys: lr, betas, weight_decay");
  EXPECT_CONTAINS(e1.message(), "got float '0.1'");

  const Error e2 =
      expect_error([&] { cfg_.merge_yaml_file(write("b.yaml", "training:\n  lr:\n    peak: 0.1\n")); });
  EXPECT_EQ(e2.key(), "training.lr");
  EXPECT_CONTAINS(e2.message(), "got a map (this key is a single value, not a section)");

  const Error e3 = expect_error([&] { cfg_.merge_yaml_file(write("c.yaml", "- 1\n- 2\n")); });
  EXPECT_CONTAINS(e3.message(), "expected a map of keys at the top level, got a list");

  const Error e4 = expect_error([&] { cfg_.apply_override("training=5"); });
  EXPECT_EQ(e4.file(), "command line (--set training=5)");
  EXPECT_CONTAINS(e4.message(), "'training' is a section");
}

TEST_F(ConfigTest, NullOnlyWhereNullable) {
  cfg_.merge_yaml_file(write("a.yaml", "model:\n  d_head: 16\n"));
  EXPECT_EQ(cfg_.get_int("model.d_head"), 16);
  cfg_.merge_yaml_file(write("b.yaml", "model:\n  d_head: null\n"));
  EXPECT_TRUE(cfg_.is_null("model.d_head"));
  const Error e = expect_error([&] { cfg_.merge_yaml_file(write("c.yaml", "model:\n  d_model: ~\n")); });
  EXPECT_EQ(e.line(), 2);
  EXPECT_CONTAINS(e.message(), "got null (this key cannot be null)");
}

TEST_F(ConfigTest, KeySetTwiceInOneFileIsAnError) {
  const std::string path = write("a.yaml", "training:\n  lr: 0.1\ntraining.lr: 0.2\n");
  const Error e = expect_error([&] { cfg_.merge_yaml_file(path); });
  EXPECT_EQ(e.line(), 3);
  EXPECT_CONTAINS(e.message(), "set twice in the same file (first at line 2)");
}

TEST_F(ConfigTest, MultipleDocumentsRejected) {
  const Error e = expect_error([&] { cfg_.merge_yaml_file(write("a.yaml", "seed: 1\n---\nseed: 2\n")); });
  EXPECT_CONTAINS(e.message(), "2 YAML documents");
}

TEST_F(ConfigTest, OverridesParseScalarsListsAndLiterals) {
  cfg_.apply_override("training.lr=0.01");
  cfg_.apply_override("training.betas=[0.9,0.98]");
  cfg_.apply_override("training.batch_size=32");
  EXPECT_EQ(cfg_.get_int("training.batch_size"), 32);
  cfg_.apply_override("training.batch_size=full");
  cfg_.apply_override(" training.optimizer = sgd ");
  cfg_.apply_override("model.d_head=null");
  cfg_.apply_override("run.name=my run: v2");  // not valid YAML as a plain scalar; fine for a string key
  cfg_.apply_override("training={weight_decay: 0.5, shuffle: false}");
  EXPECT_DOUBLE_EQ(cfg_.get_double("training.lr"), 0.01);
  EXPECT_EQ(cfg_.get_double_list("training.betas"), (std::vector<double>{0.9, 0.98}));
  EXPECT_EQ(cfg_.get_string("training.batch_size"), "full");
  EXPECT_EQ(cfg_.get_string("training.optimizer"), "sgd");
  EXPECT_TRUE(cfg_.is_null("model.d_head"));
  EXPECT_EQ(cfg_.get_string("run.name"), "my run: v2");
  EXPECT_DOUBLE_EQ(cfg_.get_double("training.weight_decay"), 0.5);
  EXPECT_FALSE(cfg_.get_bool("training.shuffle"));
  EXPECT_EQ(cfg_.source("training.lr").kind, ValueSource::Kind::kCommandLine);
  EXPECT_EQ(cfg_.source("training.lr").label(), "command line (--set training.lr=0.01)");
}

TEST_F(ConfigTest, OverrideErrorsNameTheCommandLine) {
  const Error e = expect_error([&] { cfg_.apply_override("training.lr=abc"); });
  EXPECT_EQ(e.file(), "command line (--set training.lr=abc)");
  EXPECT_FALSE(e.line().has_value());
  EXPECT_EQ(
      e.message(),
      "command line (--set training.lr=abc): key 'training.lr': expected float in (0, 1], got string 'abc'");

  const Error e2 = expect_error([&] { cfg_.apply_override("training.lrr=0.1"); });
  EXPECT_CONTAINS(e2.message(), "unknown key (did you mean 'training.lr'?)");

  const Error e3 = expect_error([&] { cfg_.apply_override("training.lr"); });
  EXPECT_CONTAINS(e3.message(), "expected KEY=VALUE");

  const Error e4 = expect_error([&] { cfg_.apply_override("training.batch_size=half"); });
  EXPECT_CONTAINS(e4.message(), "expected int >= 1 or 'full', got string 'half'");

  const Error e5 = expect_error([&] { cfg_.apply_override("training.batch_size=0"); });
  EXPECT_CONTAINS(e5.message(), "value 0 is out of range: must be >= 1");

  const Error e6 = expect_error([&] { cfg_.apply_override("training.betas=[0.9, 0.98"); });
  EXPECT_CONTAINS(e6.message(), "cannot parse value");

  const Error e7 = expect_error([&] { cfg_.apply_override("=3"); });
  EXPECT_CONTAINS(e7.message(), "empty key");
}

TEST_F(ConfigTest, NamedFlagsValidateTheSameWay) {
  cfg_.set("training.lr", 0.01, "--lr");
  EXPECT_DOUBLE_EQ(cfg_.get_double("training.lr"), 0.01);
  EXPECT_EQ(cfg_.source("training.lr").label(), "command line (--lr)");
  cfg_.set("training.batch_size", "full", "--batch-size");
  cfg_.set("training.batch_size", 8, "--batch-size");
  EXPECT_EQ(cfg_.get_int("training.batch_size"), 8);
  cfg_.set_text("training.weight_decay", "1e-2", "--wd");
  EXPECT_DOUBLE_EQ(cfg_.get_double("training.weight_decay"), 0.01);

  const Error e = expect_error([&] { cfg_.set("training.lr", 5.0, "--lr"); });
  EXPECT_EQ(e.message(),
            "command line (--lr): key 'training.lr': value 5.0 is out of range: must be in (0, 1]");
  // JSON strings are not numbers: a CLI layer that wants parsing uses set_text.
  const Error e2 = expect_error([&] { cfg_.set("training.lr", "0.1", "--lr"); });
  EXPECT_CONTAINS(e2.message(), "got string '0.1'");
  const Error e3 = expect_error([&] { cfg_.set("run.name", 3, "--name"); });
  EXPECT_CONTAINS(e3.message(), "expected string, got int '3'");
  const Error e4 = expect_error([&] { cfg_.set("training", 3, "--training"); });
  EXPECT_CONTAINS(e4.message(), "is a section");
  const Error e5 = expect_error([&] { cfg_.set("trainng.lr", 0.1, "--lr"); });
  EXPECT_CONTAINS(e5.message(), "did you mean 'training.lr'?");
}

TEST_F(ConfigTest, CrossFieldCheckNamesKeysAndSources) {
  const std::string path = write("a.yaml", "model:\n  d_model: 110\n");
  cfg_.merge_yaml_file(path);
  const Error e = expect_error([&] { cfg_.validate(); });
  // Blame goes to the non-default key, with its file and line.
  EXPECT_EQ(e.file(), path);
  EXPECT_EQ(e.line(), 2);
  EXPECT_EQ(e.key(), "model.d_model");
  EXPECT_CONTAINS(e.message(), "model.d_model must be divisible by model.n_heads");
  EXPECT_CONTAINS(e.message(), "model.d_model = 110 from " + path + ":2");
  EXPECT_CONTAINS(e.message(), "model.n_heads = 4 from default");

  cfg_.apply_override("model.n_heads=3");
  const Error e2 = expect_error([&] { cfg_.validate(); });
  // The most recent change is blamed.
  EXPECT_EQ(e2.key(), "model.n_heads");
  EXPECT_EQ(e2.file(), "command line (--set model.n_heads=3)");
  EXPECT_CONTAINS(e2.message(), "model.n_heads = 3 from command line (--set model.n_heads=3)");

  cfg_.apply_override("model.n_heads=5");
  EXPECT_NO_THROW(cfg_.validate());
}

TEST_F(ConfigTest, CanonicalJsonIsSortedCompactAndStable) {
  ConfigSchema s;
  s.add_float("b.y", 1.0, "");
  s.add_int("b.x", 2, "");
  s.add_string("a", "hi", "");
  s.add_float_list("c", {0.5}, "");
  Config c(s);
  EXPECT_EQ(c.to_canonical_json(), R"({"a":"hi","b":{"x":2,"y":1.0},"c":[0.5]})");

  // The same values reached by different routes (key order, int vs float spelling, file vs override).
  Config c1(make_schema());
  c1.merge_yaml_file(write("a.yaml", "training:\n  weight_decay: 1\n  lr: 0.5\nseed: 7\n"));
  Config c2(make_schema());
  c2.merge_yaml_file(write("b.yaml", "seed: 7\ntraining.lr: 5e-1\n"));
  c2.apply_override("training.weight_decay=1.0");
  EXPECT_EQ(c1.to_canonical_json(), c2.to_canonical_json());
  EXPECT_EQ(c1.to_canonical_json(), c1.to_canonical_json());
  const std::string text = c1.to_canonical_json();
  EXPECT_EQ(text.find_first_of(" \n\t"), std::string::npos);
  EXPECT_LT(text.find("\"eval\""), text.find("\"model\""));
  EXPECT_LT(text.find("\"model\""), text.find("\"run\""));
  EXPECT_LT(text.find("\"run\""), text.find("\"seed\""));
  EXPECT_LT(text.find("\"seed\""), text.find("\"training\""));
  EXPECT_EQ(json::parse(text), c1.resolved());
}

TEST_F(ConfigTest, HashTracksValues) {
  Config a(make_schema());
  Config b(make_schema());
  EXPECT_EQ(a.hash(), b.hash());
  EXPECT_EQ(a.hash().size(), 64u);
  EXPECT_EQ(a.hash().find_first_not_of("0123456789abcdef"), std::string::npos);
  b.apply_override("training.lr=0.002");
  EXPECT_NE(a.hash(), b.hash());
  b.apply_override("training.lr=0.001");
  EXPECT_EQ(a.hash(), b.hash());
}

TEST_F(ConfigTest, DescribeListsEveryKey) {
  const ConfigSchema schema = make_schema();
  const std::string d = schema.describe();
  for (const auto& f : schema.fields()) {
    EXPECT_CONTAINS(d, f.path);
  }
  EXPECT_CONTAINS(d, "float in (0, 1]");
  EXPECT_CONTAINS(d, "default 0.001");
  EXPECT_CONTAINS(d, "Peak learning rate.");
  EXPECT_CONTAINS(d, "int >= 1 or 'full'");
  EXPECT_CONTAINS(d, "int >= 1 or null");
  EXPECT_CONTAINS(d, "one of 'adam', 'adamw', 'sgd'");
  EXPECT_CONTAINS(d, "list of 2 floats, each in [0, 1)");
}

TEST(ConfigSchemaTest, MisuseIsALogicError) {
  ConfigSchema s;
  s.add_int("a.b", 1, "");
  EXPECT_THROW(s.add_int("a.b", 1, ""), std::logic_error);    // twice
  EXPECT_THROW(s.add_int("a", 1, ""), std::logic_error);      // already a section
  EXPECT_THROW(s.add_int("a.b.c", 1, ""), std::logic_error);  // under a value
  EXPECT_THROW(s.add_int("x..y", 1, ""), std::logic_error);   // empty segment
  EXPECT_THROW(s.add_int("x/y", 1, ""), std::logic_error);    // bad character

  ConfigSchema bad_null;
  bad_null.add_int("n", nullptr, "");  // null default without nullable()
  EXPECT_THROW(Config{bad_null}, std::logic_error);
  ConfigSchema bad_range;
  bad_range.add_float("f", 2.0, "").max(1);
  EXPECT_THROW(Config{bad_range}, std::logic_error);
  ConfigSchema bad_enum;
  bad_enum.add_enum("e", "x", {}, "");
  EXPECT_THROW(Config{bad_enum}, std::logic_error);
}

TEST_F(ConfigTest, GetterMisuseIsALogicError) {
  EXPECT_THROW(cfg_.get_int("training.lr"), std::logic_error);
  EXPECT_THROW(cfg_.get_int("model.d_head"), std::logic_error);         // null
  EXPECT_THROW(cfg_.get_int("training.batch_size"), std::logic_error);  // currently "full"
  EXPECT_THROW(cfg_.get_double("no.such"), std::logic_error);
  EXPECT_THROW(cfg_.get_string("training"), std::logic_error);  // a section
  EXPECT_THROW(cfg_.fail("rule", {}), std::logic_error);
  EXPECT_DOUBLE_EQ(cfg_.get_double("model.d_model"), 128.0);  // ints widen to double
}

// A config sent to another MPI rank comes back the same: values, hash, each key's source, and the key a
// cross-field check blames (the most recently set one).
TEST(ConfigTransfer, RoundTripKeepsValuesHashSourcesAndBlame) {
  Config c(make_schema());
  c.merge_yaml_string("model:\n  d_model: 96\ntraining:\n  lr: 0.01\n", "cfg.yaml");
  c.apply_override("model.n_heads=5");
  c.set("seed", 7, "--seed");
  const std::string wire = c.to_transfer_json().dump();
  const Config back = Config::from_transfer_json(make_schema(), json::parse(wire));
  EXPECT_EQ(back.hash(), c.hash());
  EXPECT_EQ(back.to_canonical_json(), c.to_canonical_json());
  for (const char* key : {"seed", "model.d_model", "model.n_heads", "training.lr", "training.optimizer"}) {
    EXPECT_EQ(back.source(key).label(), c.source(key).label()) << key;
    EXPECT_EQ(back.source(key).kind, c.source(key).kind) << key;
  }
  EXPECT_EQ(back.source("model.d_model").line, 2);
  const Error a = expect_error([&] { c.validate(); });
  const Error b = expect_error([&] { back.validate(); });
  EXPECT_EQ(a.message(), b.message());
  EXPECT_CONTAINS(b.message(), "n_heads");
  // A key the receiving schema does not have is an error, not a silent drop.
  json bad = c.to_transfer_json();
  bad["sources"]["model.n_layers"] = {{"kind", 0}, {"where", ""}, {"line", 0}};
  const Error e = expect_error([&] { (void)Config::from_transfer_json(make_schema(), bad); });
  EXPECT_CONTAINS(e.message(), "model.n_layers");
}

}  // namespace
}  // namespace husai
