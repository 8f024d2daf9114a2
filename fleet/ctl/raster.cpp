#include "ctl/raster.h"

#include <algorithm>
#include <array>

namespace sanigate::ctl {
namespace {

// The font: 5x7 glyphs plus one row below the baseline for the descenders of g, j, p, q, y;
// eight rows of five pixels per glyph, top to bottom, '#' = ink.
struct GlyphSource {
  char c;
  const char* rows;  // "ABCDE ABCDE ..." (8 groups of 5)
};

// clang-format off
constexpr GlyphSource kGlyphs[] = {
    {'0', ".###. #...# #..## #.#.# ##..# #...# .###. ....."},
    {'1', "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###. ....."},
    {'2', ".###. #...# ....# ...#. ..#.. .#... ##### ....."},
    {'3', "##### ...#. ..#.. ...#. ....# #...# .###. ....."},
    {'4', "...#. ..##. .#.#. #..#. ##### ...#. ...#. ....."},
    {'5', "##### #.... ####. ....# ....# #...# .###. ....."},
    {'6', "..##. .#... #.... ####. #...# #...# .###. ....."},
    {'7', "##### ....# ...#. ..#.. .#... .#... .#... ....."},
    {'8', ".###. #...# #...# .###. #...# #...# .###. ....."},
    {'9', ".###. #...# #...# .#### ....# ...#. .##.. ....."},
    {'A', ".###. #...# #...# ##### #...# #...# #...# ....."},
    {'B', "####. #...# #...# ####. #...# #...# ####. ....."},
    {'C', ".###. #...# #.... #.... #.... #...# .###. ....."},
    {'D', "###.. #..#. #...# #...# #...# #..#. ###.. ....."},
    {'E', "##### #.... #.... ####. #.... #.... ##### ....."},
    {'F', "##### #.... #.... ####. #.... #.... #.... ....."},
    {'G', ".###. #...# #.... #.### #...# #...# .#### ....."},
    {'H', "#...# #...# #...# ##### #...# #...# #...# ....."},
    {'I', ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###. ....."},
    {'J', "..### ...#. ...#. ...#. ...#. #..#. .##.. ....."},
    {'K', "#...# #..#. #.#.. ##... #.#.. #..#. #...# ....."},
    {'L', "#.... #.... #.... #.... #.... #.... ##### ....."},
    {'M', "#...# ##.## #.#.# #.#.# #...# #...# #...# ....."},
    {'N', "#...# #...# ##..# #.#.# #..## #...# #...# ....."},
    {'O', ".###. #...# #...# #...# #...# #...# .###. ....."},
    {'P', "####. #...# #...# ####. #.... #.... #.... ....."},
    {'Q', ".###. #...# #...# #...# #.#.# #..#. .##.# ....."},
    {'R', "####. #...# #...# ####. #.#.. #..#. #...# ....."},
    {'S', ".#### #.... #.... .###. ....# ....# ####. ....."},
    {'T', "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ....."},
    {'U', "#...# #...# #...# #...# #...# #...# .###. ....."},
    {'V', "#...# #...# #...# #...# #...# .#.#. ..#.. ....."},
    {'W', "#...# #...# #...# #.#.# #.#.# #.#.# .#.#. ....."},
    {'X', "#...# #...# .#.#. ..#.. .#.#. #...# #...# ....."},
    {'Y', "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.. ....."},
    {'Z', "##### ....# ...#. ..#.. .#... #.... ##### ....."},
    {'a', "..... ..... .###. ....# .#### #...# .#### ....."},
    {'b', "#.... #.... #.##. ##..# #...# #...# ####. ....."},
    {'c', "..... ..... .###. #.... #.... #...# .###. ....."},
    {'d', "....# ....# .##.# #..## #...# #...# .#### ....."},
    {'e', "..... ..... .###. #...# ##### #.... .###. ....."},
    {'f', "..##. .#..# .#... ###.. .#... .#... .#... ....."},
    {'g', "..... ..... .#### #...# #...# .#### ....# .###."},
    {'h', "#.... #.... #.##. ##..# #...# #...# #...# ....."},
    {'i', "..#.. ..... .##.. ..#.. ..#.. ..#.. .###. ....."},
    {'j', "...#. ..... ..##. ...#. ...#. ...#. #..#. .##.."},
    {'k', "#.... #.... #..#. #.#.. ##... #.#.. #..#. ....."},
    {'l', ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###. ....."},
    {'m', "..... ..... ##.#. #.#.# #.#.# #...# #...# ....."},
    {'n', "..... ..... #.##. ##..# #...# #...# #...# ....."},
    {'o', "..... ..... .###. #...# #...# #...# .###. ....."},
    {'p', "..... ..... ####. #...# #...# ####. #.... #...."},
    {'q', "..... ..... .#### #...# #...# .#### ....# ....#"},
    {'r', "..... ..... #.##. ##..# #.... #.... #.... ....."},
    {'s', "..... ..... .#### #.... .###. ....# ####. ....."},
    {'t', ".#... .#... ###.. .#... .#... .#..# ..##. ....."},
    {'u', "..... ..... #...# #...# #...# #..## .##.# ....."},
    {'v', "..... ..... #...# #...# #...# .#.#. ..#.. ....."},
    {'w', "..... ..... #...# #...# #.#.# #.#.# .#.#. ....."},
    {'x', "..... ..... #...# .#.#. ..#.. .#.#. #...# ....."},
    {'y', "..... ..... #...# #...# #...# .#### ....# .###."},
    {'z', "..... ..... ##### ...#. ..#.. .#... ##### ....."},
    {'.', "..... ..... ..... ..... ..... .##.. .##.. ....."},
    {',', "..... ..... ..... ..... .##.. ..#.. .#... ....."},
    {'%', "##... ##..# ...#. ..#.. .#... #..## ...## ....."},
    {'-', "..... ..... ..... ##### ..... ..... ..... ....."},
    {'_', "..... ..... ..... ..... ..... ..... ##### ....."},
    {':', "..... .##.. .##.. ..... .##.. .##.. ..... ....."},
    {'/', "..... ....# ...#. ..#.. .#... #.... ..... ....."},
    {'(', "...#. ..#.. .#... .#... .#... ..#.. ...#. ....."},
    {')', ".#... ..#.. ...#. ...#. ...#. ..#.. .#... ....."},
    {'+', "..... ..#.. ..#.. ##### ..#.. ..#.. ..... ....."},
    {'=', "..... ..... ##### ..... ##### ..... ..... ....."},
    {'?', ".###. #...# ....# ...#. ..#.. ..... ..#.. ....."},
};
// clang-format on

using Bits = std::array<uint8_t, kGlyphHeight>;  // bit 4 = leftmost column

struct Font {
  std::array<Bits, 128> glyph{};
  std::array<bool, 128> has{};
  Font() {
    for (const GlyphSource& g : kGlyphs) {
      Bits bits{};
      const char* p = g.rows;
      for (int row = 0; row < kGlyphHeight; ++row) {
        for (int col = 0; col < kGlyphWidth; ++col, ++p)
          if (*p == '#') bits[static_cast<size_t>(row)] |= static_cast<uint8_t>(1u << (kGlyphWidth - 1 - col));
        if (*p == ' ') ++p;
      }
      auto i = static_cast<size_t>(static_cast<unsigned char>(g.c));
      glyph[i] = bits;
      has[i] = true;
    }
    has[' '] = true;  // all blank
  }
  const Bits& Of(char c) const {
    auto i = static_cast<size_t>(static_cast<unsigned char>(c));
    return i < 128 && has[i] ? glyph[i] : glyph['?'];
  }
};

const Font& TheFont() {
  static const Font font;
  return font;
}

}  // namespace

Image::Image(int width, int height, Rgba fill)
    : width_(std::max(width, 0)),
      height_(std::max(height, 0)),
      px_(static_cast<size_t>(width_) * static_cast<size_t>(height_) * 4) {
  FillRect(0, 0, width_, height_, fill);
}

Rgba Image::At(int x, int y) const {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return {0, 0, 0, 0};
  const uint8_t* p = &px_[(static_cast<size_t>(y) * static_cast<size_t>(width_) + static_cast<size_t>(x)) * 4];
  return {p[0], p[1], p[2], p[3]};
}

void Image::Set(int x, int y, Rgba c) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
  uint8_t* p = &px_[(static_cast<size_t>(y) * static_cast<size_t>(width_) + static_cast<size_t>(x)) * 4];
  p[0] = c.r;
  p[1] = c.g;
  p[2] = c.b;
  p[3] = c.a;
}

void Image::FillRect(int x0, int y0, int x1, int y1, Rgba c) {
  x0 = std::max(x0, 0);
  y0 = std::max(y0, 0);
  x1 = std::min(x1, width_);
  y1 = std::min(y1, height_);
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) Set(x, y, c);
}

void Image::StrokeRect(int x0, int y0, int x1, int y1, Rgba c) {
  if (x1 <= x0 || y1 <= y0) return;
  FillRect(x0, y0, x1, y0 + 1, c);
  FillRect(x0, y1 - 1, x1, y1, c);
  FillRect(x0, y0, x0 + 1, y1, c);
  FillRect(x1 - 1, y0, x1, y1, c);
}

void Image::Darken(int x, int y, int num, int den) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_ || den <= 0) return;
  uint8_t* p = &px_[(static_cast<size_t>(y) * static_cast<size_t>(width_) + static_cast<size_t>(x)) * 4];
  for (int k = 0; k < 3; ++k) p[k] = static_cast<uint8_t>(p[k] * num / den);
}

bool HasGlyph(char c) {
  auto i = static_cast<size_t>(static_cast<unsigned char>(c));
  return i < 128 && TheFont().has[i];
}

int TextWidth(std::string_view text, int scale) {
  if (text.empty()) return 0;
  return (static_cast<int>(text.size()) * kGlyphAdvance - 1) * scale;
}

int DrawText(Image& image, int x, int y, std::string_view text, Rgba color, int scale) {
  const Font& font = TheFont();
  int cx = x;
  for (char c : text) {
    if (c != ' ') {
      const Bits& bits = font.Of(c);
      for (int row = 0; row < kGlyphHeight; ++row)
        for (int col = 0; col < kGlyphWidth; ++col)
          if (bits[static_cast<size_t>(row)] & (1u << (kGlyphWidth - 1 - col)))
            image.FillRect(cx + col * scale, y + row * scale, cx + (col + 1) * scale, y + (row + 1) * scale, color);
    }
    cx += kGlyphAdvance * scale;
  }
  return TextWidth(text, scale);
}

}  // namespace sanigate::ctl
