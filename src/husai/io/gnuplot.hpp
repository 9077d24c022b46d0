#pragma once

#include <string>

namespace husai {

// Renders a gnuplot figure headlessly to PNG (pngcairo) and SVG. `body` holds everything after the
// terminal/output lines (datablocks, settings, plot commands). Each file is rendered to a temporary
// name and renamed, so a failed render never leaves a half-written figure. Throws husai::Error with
// gnuplot's message when it fails or is missing.
void render_figure(const std::string& body, const std::string& png_path, const std::string& svg_path,
                   int width = 900, int height = 700);

}  // namespace husai
