// A tiny RGBA raster for `sanictl heatmap render`: filled rectangles, darkened lines and text in
// a built-in 5x7 bitmap font with a descender row (digits, a-z, A-Z, space and . , % - _ : / ( ) + =;
// anything else draws as '?'), so pictures need no system fonts and look the same everywhere.
// Plain values; no shared state; thread-safe per instance.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace sanigate::ctl {

struct Rgba {
  uint8_t r = 0, g = 0, b = 0, a = 255;
  bool operator==(const Rgba&) const = default;
};

// Pixels in rows top to bottom, 4 bytes (R, G, B, A) each. Drawing outside is clipped.
class Image {
 public:
  Image() = default;
  Image(int width, int height, Rgba fill);

  int width() const { return width_; }
  int height() const { return height_; }
  const std::vector<uint8_t>& rgba() const { return px_; }

  Rgba At(int x, int y) const;  // transparent black outside
  void Set(int x, int y, Rgba c);
  // Fills [x0, x1) x [y0, y1).
  void FillRect(int x0, int y0, int x1, int y1, Rgba c);
  // A 1-pixel outline just inside [x0, x1) x [y0, y1).
  void StrokeRect(int x0, int y0, int x1, int y1, Rgba c);
  // Multiplies R, G and B of one pixel by num/den (a grid line over whatever is below).
  void Darken(int x, int y, int num, int den);

 private:
  int width_ = 0, height_ = 0;
  std::vector<uint8_t> px_;
};

inline constexpr int kGlyphWidth = 5;
inline constexpr int kGlyphHeight = 8;   // 7 above the baseline, 1 for descenders
inline constexpr int kGlyphAdvance = 6;  // glyph + one blank column

// Whether the font has a glyph for `c` (otherwise it draws '?').
bool HasGlyph(char c);
// Pixel width of `text` at `scale` (each font pixel a scale x scale square), without the blank
// column after the last glyph.
int TextWidth(std::string_view text, int scale);
// Draws `text` with its top left corner at (x, y); returns the width drawn.
int DrawText(Image& image, int x, int y, std::string_view text, Rgba color, int scale);

}  // namespace sanigate::ctl
