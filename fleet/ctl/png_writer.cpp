#include "ctl/png_writer.h"

#include <png.h>

#include <cstring>
#include <string>

namespace sanigate::ctl {

Result<std::vector<uint8_t>> EncodePng(const Image& image) {
  if (image.width() <= 0 || image.height() <= 0) return Invalid("cannot encode an empty image as PNG");
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width());
  png.height = static_cast<png_uint_32>(image.height());
  png.format = PNG_FORMAT_RGBA;
  const png_int_32 stride = image.width() * 4;
  const void* pixels = image.rgba().data();

  // First call: the size; second call: the bytes.
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&png, nullptr, &size, 0, pixels, stride, nullptr) || size == 0) {
    std::string why = png.message;
    png_image_free(&png);
    return Internal("libpng: " + why);
  }
  std::vector<uint8_t> out(size);
  if (!png_image_write_to_memory(&png, out.data(), &size, 0, pixels, stride, nullptr)) {
    std::string why = png.message;
    png_image_free(&png);
    return Internal("libpng: " + why);
  }
  out.resize(size);
  return out;
}

}  // namespace sanigate::ctl
