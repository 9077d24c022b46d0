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

// A PNG ends with its IEND chunk, an SVG with the closing </svg> tag: what a cut-off write lacks.
bool figure_complete(const std::string& path) {
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const Error&) {
    return false;
  }
  static const std::string kPngEnd("\x00\x00\x00\x00IEND\xae\x42\x60\x82", 12);
  if (bytes.rfind("\x89PNG", 0) == 0)
    return bytes.size() >= 12 && bytes.compare(bytes.size() - 12, 12, kPngEnd) == 0;
  const size_t tail = bytes.size() > 64 ? bytes.size() - 64 : 0;
  return bytes.find("</svg>", tail) != std::string::npos;
}

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
  if (rc == 0 && std::filesystem::exists(tmp_out) && !figure_complete(tmp_out)) {
    // gnuplot can exit 0 after a failed write (a full disk, a file-size limit): never publish a cut figure.
    std::filesystem::remove(tmp_out, ec);
    throw Error("the figure gnuplot wrote is incomplete (disk full or file-size limit?)").file(out_path);
  }
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
