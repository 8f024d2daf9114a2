// Batches for a metered upstream: consecutive small records in one publish, optionally
// compressed. Off by default ([[upstream]] batch_max_records). The format (README, "Upstream
// destinations"): topic {prefix}/{site}/gateway/{gateway}/batch, or …/batch/deflate and
// …/batch/zstd for the compressed forms, payload
//   {"gateway":"gw-1","count":2,"records":[{"topic":"…","retain":false,"payload":{…}},…]}
// where each record's topic is already mapped to the destination's prefix and its payload is
// the record's JSON as published alone (a payload that is not JSON is carried as a string).
// "deflate" is a zlib stream (RFC 1950), "zstd" a Zstandard frame. Retained records are never
// batched: they go alone, so the far broker keeps them retained. Pure functions; thread-safe.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "core/status.h"
#include "store/outbox.h"

namespace sanigate::upstream {

enum class Compression { kNone, kDeflate, kZstd };

// "none" | "deflate" | "zstd"; nullopt for anything else.
std::optional<Compression> ParseCompression(std::string_view name);
// The topic suffix after …/batch: "", "/deflate" or "/zstd".
const char* CompressionSuffix(Compression c);

std::string BuildBatch(std::span<const store::Envelope> records,
                       const std::function<std::string(const std::string&)>& map_topic, std::string_view gateway);

Result<std::string> Compress(std::string_view data, Compression c);
// At most `max_out` bytes out (a consumer's guard against a decompression bomb).
Result<std::string> Decompress(std::string_view data, Compression c, size_t max_out);

}  // namespace sanigate::upstream
