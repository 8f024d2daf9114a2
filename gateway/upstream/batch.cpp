#include "upstream/batch.h"

#include <zlib.h>
#include <zstd.h>

#include <nlohmann/json.hpp>

namespace sanigate::upstream {

std::optional<Compression> ParseCompression(std::string_view name) {
  if (name == "none") return Compression::kNone;
  if (name == "deflate") return Compression::kDeflate;
  if (name == "zstd") return Compression::kZstd;
  return std::nullopt;
}

const char* CompressionSuffix(Compression c) {
  switch (c) {
    case Compression::kDeflate: return "/deflate";
    case Compression::kZstd: return "/zstd";
    case Compression::kNone: break;
  }
  return "";
}

std::string BuildBatch(std::span<const store::Envelope> records,
                       const std::function<std::string(const std::string&)>& map_topic, std::string_view gateway) {
  using json = nlohmann::json;
  auto quoted = [](std::string_view s) {
    return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
  };
  std::string out = "{\"gateway\":" + quoted(gateway) + ",\"count\":" + std::to_string(records.size()) + ",\"records\":[";
  bool first = true;
  for (const auto& r : records) {
    if (!first) out += ',';
    first = false;
    out += "{\"topic\":" + quoted(map_topic ? map_topic(r.msg.topic) : r.msg.topic) + ",\"retain\":";
    out += r.msg.retain ? "true" : "false";
    out += ",\"payload\":";
    // Records are JSON already: embedded as they are, so a consumer reads them like single ones.
    // (The parser stops at a NUL and accepts what came before it: such a payload is a string.)
    if (r.msg.payload.find('\0') == std::string::npos && json::accept(r.msg.payload)) out += r.msg.payload;
    else out += quoted(r.msg.payload);
    out += '}';
  }
  out += "]}";
  return out;
}

Result<std::string> Compress(std::string_view data, Compression c) {
  if (c == Compression::kNone) return std::string(data);
  std::string out;
  if (c == Compression::kDeflate) {
    uLongf size = compressBound(static_cast<uLong>(data.size()));
    out.resize(size);
    int rc = compress2(reinterpret_cast<Bytef*>(out.data()), &size, reinterpret_cast<const Bytef*>(data.data()),
                       static_cast<uLong>(data.size()), Z_DEFAULT_COMPRESSION);
    if (rc != Z_OK) return Internal("deflate failed (zlib rc " + std::to_string(rc) + ")");
    out.resize(size);
    return out;
  }
  out.resize(ZSTD_compressBound(data.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
  if (ZSTD_isError(n)) return Internal(std::string("zstd failed: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

Result<std::string> Decompress(std::string_view data, Compression c, size_t max_out) {
  if (c == Compression::kNone) return std::string(data);
  std::string out;
  if (c == Compression::kDeflate) {
    z_stream z{};
    if (inflateInit(&z) != Z_OK) return Internal("inflateInit failed");
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    char buf[16384];
    int rc = Z_OK;
    while (rc == Z_OK) {
      z.next_out = reinterpret_cast<Bytef*>(buf);
      z.avail_out = sizeof buf;
      rc = inflate(&z, Z_NO_FLUSH);
      out.append(buf, sizeof buf - z.avail_out);
      if (out.size() > max_out) rc = Z_MEM_ERROR;
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END) return Invalid("not a complete zlib stream within " + std::to_string(max_out) + " bytes");
    return out;
  }
  ZSTD_DStream* d = ZSTD_createDStream();
  ZSTD_initDStream(d);
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  char buf[16384];
  size_t last = 1;
  while (in.pos < in.size) {
    ZSTD_outBuffer o{buf, sizeof buf, 0};
    last = ZSTD_decompressStream(d, &o, &in);
    if (ZSTD_isError(last)) break;
    out.append(buf, o.pos);
    if (out.size() > max_out) break;
  }
  ZSTD_freeDStream(d);
  if (ZSTD_isError(last) || last != 0 || out.size() > max_out)
    return Invalid("not a complete zstd frame within " + std::to_string(max_out) + " bytes");
  return out;
}

}  // namespace sanigate::upstream
