#include "husai/io/gnuplot.hpp"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "husai/core/atomic_file.hpp"
#include "husai/core/error.hpp"

namespace husai {
namespace {

void render_one(const std::string& terminal, const std::string& body, const std::string& out_path) {
  const std::string tmp_out = out_path + ".tmp." + std::to_string(getpid());
  const std::string script_path = out_path + ".gp.tmp." + std::to_string(getpid());
  std::ostringstream script;
  script << "set terminal " << terminal << "\n";
  script << "set output '" << tmp_out << "'\n";
  script << body << "\nunset output\n";
  write_file_atomic(script_path, script.str());
  const std::string log_path = script_path + ".log";
  const std::string cmd = "gnuplot '" + script_path + "' > '" + log_path + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::string log;
  try {
    log = read_file(log_path);
  } catch (const Error&) {
  }
  std::error_code ec;
  std::filesystem::remove(script_path, ec);
  std::filesystem::remove(log_path, ec);
  if (rc != 0 || !std::filesystem::exists(tmp_out)) {
    std::filesystem::remove(tmp_out, ec);
    throw Error("gnuplot failed (is gnuplot installed? `make deps` installs gnuplot-nox): " + log)
        .file(out_path);
  }
  std::filesystem::rename(tmp_out, out_path, ec);
  if (ec) throw Error("cannot rename figure into place: " + ec.message()).file(out_path);
}

}  // namespace

void render_figure(const std::string& body, const std::string& png_path, const std::string& svg_path,
                   int width, int height) {
  const std::string size = std::to_string(width) + "," + std::to_string(height);
  render_one("pngcairo size " + size + " enhanced font 'Sans,11'", body, png_path);
  render_one("svg size " + size + " enhanced font 'Sans,11' background rgb 'white'", body, svg_path);
}

}  // namespace husai
