// heatmap show|export|render: one call of sanifleet's admin verb `heatmap` (fleet/README.md),
// then the pure rendering of heatmap_render.h: a table and a character map, GeoJSON or CSV, or a
// PNG picture.
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>

#include "ctl/format.h"
#include "ctl/heatmap_render.h"
#include "ctl/png_writer.h"
#include "ctl/verbs.h"
#include "settings/reader.h"

namespace sanigate::ctl {
namespace {

// Checks the arguments before anything is sent; prints the problem and returns false (exit 2).
bool BuildRequest(const HeatmapArgs& a, json& request) {
  if (!IsHeatmapLayer(a.layer)) {
    std::string known;
    for (const auto& l : HeatmapLayers()) known += (known.empty() ? "" : ", ") + l;
    std::cerr << "sanictl: unknown layer \"" << a.layer << "\" (expected " << known << ")\n";
    return false;
  }
  request = {{"layer", a.layer}};
  auto window = ParseWindowArg(a.window);
  if (!window.ok()) {
    std::cerr << "sanictl: --window: " << window.status().message() << "\n";
    return false;
  }
  request["window"] = window.value() == 0 ? json("state") : json(window.value());
  if (!a.at.empty()) {
    if (window.value() == 0) {
      std::cerr << "sanictl: --at picks a past window: give --window too (15m, 1h, 24h or seconds)\n";
      return false;
    }
    auto at = ParseTimeArg(a.at);
    if (!at.ok()) {
      std::cerr << "sanictl: --at: " << at.status().message() << "\n";
      return false;
    }
    request["at"] = at.value();
  }
  if (a.precision) {
    if (*a.precision < 6 || *a.precision > 8) {
      std::cerr << "sanictl: --precision must be 6 (~1.2 km), 7 (~150 m) or 8 (~40 m), not " << *a.precision << "\n";
      return false;
    }
    request["precision"] = *a.precision;
  }
  if (!a.site.empty()) {
    if (!settings::IsValidId(a.site)) {
      std::cerr << "sanictl: --site \"" << a.site << "\" is not a valid id ([a-z0-9._-]+)\n";
      return false;
    }
    request["site"] = a.site;
  }
  return true;
}

// Asks sanifleet and decodes the answer into `r` (and the raw result into `raw`).
int Fetch(const Context& given, const HeatmapArgs& a, json& raw, HeatmapResult& r) {
  json request;
  if (!BuildRequest(a, request)) return kExitUsage;
  // --site after the verb names the heat map's site; sanifleet is addressed on the global site
  // (--site before the verb, or [ctl] site), or on that same site when there is none.
  Context ctx = given;
  if (ctx.admin.site.empty()) ctx.admin.site = a.site;
  if (!RequireSite(ctx)) return kExitUsage;
  int connect_exit = kExitOk;
  auto client = ConnectOrExplain(ctx, connect_exit);
  if (!client) return connect_exit;
  int rc = FleetCall(ctx, *client, "heatmap", request, raw);
  client->Close();
  if (rc != kExitOk) return rc;
  auto parsed = ParseHeatmapResult(raw);
  if (!parsed.ok()) {
    std::cerr << "sanictl: sanifleet's heatmap answer is unusable: " << parsed.status().message() << "\n";
    return kExitFailed;
  }
  r = std::move(parsed.value());
  return kExitOk;
}

// The intensity metric: --by, or the layer's default. Prints the problem when unknown.
bool PickMetric(const HeatmapArgs& a, const HeatmapResult& r, std::string& metric) {
  metric = a.by.empty() ? DefaultMetric(r.layer) : a.by;
  Status s = CheckMetric(r, metric);
  if (s.ok()) return true;
  std::cerr << "sanictl: --by: " << s.message() << "\n";
  return false;
}


// Writes `bytes` to `path` ("-" = stdout) through a temporary file renamed over it, so a reader
// never sees half a file. Prints the problem and returns false.
bool WriteOutput(const std::string& path, const std::string& bytes) {
  if (path.empty() || path == "-") {
    std::cout.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    std::cout.flush();
    if (!std::cout) {
      std::cerr << "sanictl: cannot write to stdout\n";
      return false;
    }
    return true;
  }
  std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (out) out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (out) out.close();
    if (!out) {
      std::cerr << "sanictl: cannot write " << path << ": " << std::strerror(errno) << "\n";
      std::remove(tmp.c_str());
      return false;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::cerr << "sanictl: cannot write " << path << ": " << std::strerror(errno) << "\n";
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

}  // namespace

int RunHeatmapShow(const Context& ctx, const HeatmapArgs& a) {
  json raw;
  HeatmapResult r;
  if (int rc = Fetch(ctx, a, raw, r); rc != kExitOk) return rc;
  if (ctx.json) {
    std::cout << raw.dump() << "\n";
    return kExitOk;
  }
  std::string metric;
  if (!PickMetric(a, r, metric)) return kExitUsage;
  std::cout << HeatmapHeadline(r) << "\n";
  if (r.cells.empty()) {
    std::cout << "no cells: nothing was binned " << (r.window ? "in this window" : "right now") << "\n";
    return kExitOk;
  }
  size_t top = a.top < 0 ? 0 : static_cast<size_t>(a.top);
  if (top > 0) {
    std::cout << "\n";
    std::cout << RenderTable(TopCellsTable(r, metric, top), ctx.color);
    if (r.cells.size() > top)
      std::cout << "(top " << top << " of " << r.cells.size() << " cells by " << metric << "; --top N for more)\n";
    else
      std::cout << "(by " << metric << ")\n";
  }
  TermMapOptions mo;
  mo.metric = metric;
  mo.unicode = !a.ascii && Utf8Terminal();
  std::cout << "\n" << RenderTermMap(r, mo).Text();
  return kExitOk;
}

int RunHeatmapExport(const Context& ctx, const HeatmapArgs& a) {
  if (a.format != "geojson" && a.format != "csv") {
    std::cerr << "sanictl: unknown format \"" << a.format << "\" (expected geojson or csv)\n";
    return kExitUsage;
  }
  json raw;
  HeatmapResult r;
  if (int rc = Fetch(ctx, a, raw, r); rc != kExitOk) return rc;
  std::string text = a.format == "csv" ? ToCsv(r) : ToGeoJson(r).dump() + "\n";
  if (!WriteOutput(a.output, text)) return kExitFailed;
  if (!a.output.empty() && a.output != "-")
    std::cerr << "wrote " << a.output << ": " << r.cells.size() << " cells (" << a.format << ")\n";
  return kExitOk;
}

int RunHeatmapRender(const Context& ctx, const HeatmapArgs& a) {
  if (a.png.empty()) {
    std::cerr << "sanictl: --png FILE is required\n";
    return kExitUsage;
  }
  if (a.width < kMinPictureWidth || a.width > kMaxPictureWidth) {
    std::cerr << "sanictl: --width must be between " << kMinPictureWidth << " and " << kMaxPictureWidth
              << " pixels, not " << a.width << "\n";
    return kExitUsage;
  }
  json raw;
  HeatmapResult r;
  if (int rc = Fetch(ctx, a, raw, r); rc != kExitOk) return rc;
  std::string metric;
  if (!PickMetric(a, r, metric)) return kExitUsage;
  PictureOptions po;
  po.width = a.width;
  po.metric = metric;
  po.title = HeatmapTitle(r);
  auto pic = RenderHeatPicture(r, po);
  if (!pic.ok()) {
    std::cerr << "sanictl: " << pic.status().message() << "\n";
    return kExitFailed;
  }
  auto png = EncodePng(pic->image);
  if (!png.ok()) {
    std::cerr << "sanictl: " << png.status().message() << "\n";
    return kExitFailed;
  }
  const auto& bytes = png.value();
  if (!WriteOutput(a.png, std::string(bytes.begin(), bytes.end()))) return kExitFailed;
  if (ctx.json && a.png != "-") {
    std::cout << json{{"png", a.png},          {"width", pic->image.width()}, {"height", pic->image.height()},
                      {"bytes", bytes.size()}, {"cells", r.cells.size()},     {"metric", metric}}
                     .dump()
              << "\n";
  } else if (a.png != "-") {
    std::cerr << "wrote " << a.png << ": " << pic->image.width() << "x" << pic->image.height() << " px, "
              << r.cells.size() << " cells by " << metric << "\n";
  }
  return kExitOk;
}

}  // namespace sanigate::ctl
