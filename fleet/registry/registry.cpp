#include "registry/registry.h"

#include "store/sqlite_db.h"

namespace sanigate::fleet {

using json = nlohmann::json;

DeviceEntry& Registry::Device(const std::string& site, const std::string& device, int64_t now_ms, bool* created) {
  auto [it, fresh] = devices_.try_emplace(RegistryKey(site, device));
  if (fresh) {
    it->second.site = site;
    it->second.device = device;
    it->second.first_seen_ms = now_ms;
  }
  if (created) *created = fresh;
  return it->second;
}

GatewayEntry& Registry::Gateway(const std::string& site, const std::string& gateway, int64_t now_ms, bool* created) {
  auto [it, fresh] = gateways_.try_emplace(RegistryKey(site, gateway));
  if (fresh) {
    it->second.site = site;
    it->second.gateway = gateway;
    it->second.first_seen_ms = now_ms;
  }
  if (created) *created = fresh;
  return it->second;
}

const DeviceEntry* Registry::FindDevice(const std::string& key) const {
  auto it = devices_.find(key);
  return it == devices_.end() ? nullptr : &it->second;
}

const GatewayEntry* Registry::FindGateway(const std::string& key) const {
  auto it = gateways_.find(key);
  return it == gateways_.end() ? nullptr : &it->second;
}

std::vector<std::string> Registry::TakeDirtyDevices() {
  std::vector<std::string> out(dirty_devices_.begin(), dirty_devices_.end());
  dirty_devices_.clear();
  return out;
}

std::vector<std::string> Registry::TakeDirtyDevices(const std::vector<std::string>& among) {
  std::vector<std::string> out;
  for (const auto& key : among)
    if (dirty_devices_.erase(key) > 0) out.push_back(key);
  return out;
}

std::vector<std::string> Registry::TakeDirtyGateways() {
  std::vector<std::string> out(dirty_gateways_.begin(), dirty_gateways_.end());
  dirty_gateways_.clear();
  return out;
}

void Registry::Put(DeviceEntry e) {
  std::string key = RegistryKey(e.site, e.device);
  devices_[key] = std::move(e);
}

void Registry::Put(GatewayEntry e) {
  std::string key = RegistryKey(e.site, e.gateway);
  gateways_[key] = std::move(e);
}

// ---- SQLite ----

namespace {

constexpr int kSchemaVersion = 2;  // 2: devices.health

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS devices (
  site TEXT NOT NULL, device TEXT NOT NULL,
  kind TEXT, protocol TEXT, gateway TEXT, profile TEXT, firmware TEXT, model TEXT,
  first_seen INTEGER, last_seen INTEGER, online INTEGER,
  metrics TEXT, metrics_ts INTEGER, lat REAL, lon REAL, interval_ms INTEGER, health TEXT,
  PRIMARY KEY (site, device)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gateways (
  site TEXT NOT NULL, gateway TEXT NOT NULL,
  version TEXT, online INTEGER, first_seen INTEGER, last_status INTEGER, started INTEGER,
  status TEXT,
  PRIMARY KEY (site, gateway)) WITHOUT ROWID;
)";

}  // namespace

struct RegistryStore::Impl {
  store::Db db;
  store::Stmt put_device, put_gateway;
};

RegistryStore::RegistryStore() : impl_(std::make_unique<Impl>()) {}
RegistryStore::~RegistryStore() = default;

Result<std::unique_ptr<RegistryStore>> RegistryStore::Open(const std::string& path) {
  auto db = store::Db::Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!db.ok()) return db.status();
  std::unique_ptr<RegistryStore> s(new RegistryStore());
  s->impl_->db = std::move(*db);
  auto& d = s->impl_->db;
  // A foreign or newer database is refused rather than overwritten.
  auto ver = d.Prepare("PRAGMA user_version");
  if (!ver.ok()) return ver.status();
  Status err;
  int64_t version = ver->Step(&err) ? ver->Int(0) : 0;
  if (!err.ok()) return err;
  ver->Reset();  // a stepped statement holds a read transaction: WAL cannot be set under it
  if (version > kSchemaVersion)
    return Status(Code::kDataLoss, path + ": registry schema version " + std::to_string(version) +
                                       " is newer than this sanifleet (" + std::to_string(kSchemaVersion) + ")");
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=5000"})
    if (Status st = d.Exec(sql); !st.ok()) return st;
  if (Status st = d.Exec(kSchema); !st.ok()) return st;
  if (version == 1)  // written by an older sanifleet: its devices have no health memory yet
    if (Status st = d.Exec("ALTER TABLE devices ADD COLUMN health TEXT"); !st.ok()) return st;
  if (Status st = d.Exec("PRAGMA user_version=" + std::to_string(kSchemaVersion)); !st.ok()) return st;
  auto pd = d.Prepare(
      "INSERT OR REPLACE INTO devices (site, device, kind, protocol, gateway, profile, firmware, model, first_seen,"
      " last_seen, online, metrics, metrics_ts, lat, lon, interval_ms, health)"
      " VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)");
  if (!pd.ok()) return pd.status();
  auto pg = d.Prepare(
      "INSERT OR REPLACE INTO gateways (site, gateway, version, online, first_seen, last_status, started, status)"
      " VALUES (?1,?2,?3,?4,?5,?6,?7,?8)");
  if (!pg.ok()) return pg.status();
  s->impl_->put_device = std::move(*pd);
  s->impl_->put_gateway = std::move(*pg);
  return s;
}

Status RegistryStore::Load(Registry& registry) {
  auto& d = impl_->db;
  auto q = d.Prepare(
      "SELECT site, device, kind, protocol, gateway, profile, firmware, model, first_seen, last_seen, online,"
      " metrics, metrics_ts, lat, lon, interval_ms, health FROM devices");
  if (!q.ok()) return q.status();
  Status err;
  while (q->Step(&err)) {
    DeviceEntry e;
    e.site = q->Text(0);
    e.device = q->Text(1);
    e.kind = q->Text(2);
    e.protocol = q->Text(3);
    e.gateway = q->Text(4);
    e.profile = q->Text(5);
    e.firmware = q->Text(6);
    e.model = q->Text(7);
    e.first_seen_ms = q->Int(8);
    e.last_seen_ms = q->Int(9);
    if (!q->IsNull(10)) e.online = q->Int(10) != 0;
    json m = json::parse(q->Text(11), nullptr, false);
    if (m.is_object()) e.metrics = std::move(m);
    e.metrics_ts_ms = q->Int(12);
    if (!q->IsNull(13) && !q->IsNull(14)) e.location = std::pair{q->Double(13), q->Double(14)};
    e.expected_interval_ms = q->Int(15);
    if (!q->IsNull(16)) e.health = q->Text(16);
    registry.Put(std::move(e));
  }
  if (!err.ok()) return err;
  auto g = d.Prepare("SELECT site, gateway, version, online, first_seen, last_status, started, status FROM gateways");
  if (!g.ok()) return g.status();
  while (g->Step(&err)) {
    GatewayEntry e;
    e.site = g->Text(0);
    e.gateway = g->Text(1);
    e.version = g->Text(2);
    e.online = g->Int(3) != 0;
    e.first_seen_ms = g->Int(4);
    e.last_status_ms = g->Int(5);
    e.started_ms = g->Int(6);
    json st = json::parse(g->Text(7), nullptr, false);
    if (st.is_object()) e.status = std::move(st);
    registry.Put(std::move(e));
  }
  return err;
}

Status RegistryStore::Flush(Registry& registry, const std::function<std::string(const std::string& key)>& health_of,
                            const std::vector<std::string>* only) {
  auto devices = only ? registry.TakeDirtyDevices(*only) : registry.TakeDirtyDevices();
  auto gateways = only ? std::vector<std::string>() : registry.TakeDirtyGateways();
  if (devices.empty() && gateways.empty()) return Status::Ok();
  auto& d = impl_->db;
  if (Status st = d.Exec("BEGIN"); !st.ok()) return st;
  auto fail = [&](Status st) {
    (void)d.Exec("ROLLBACK");
    // Keep them dirty: the next flush tries again.
    for (auto& k : devices) registry.MarkDirty(k);
    for (auto& k : gateways) registry.MarkGatewayDirty(k);
    return st;
  };
  auto& pd = impl_->put_device;
  for (const auto& key : devices) {
    const DeviceEntry* e = registry.FindDevice(key);
    if (!e) continue;
    pd.Bind(1, e->site).Bind(2, e->device).Bind(3, e->kind).Bind(4, e->protocol).Bind(5, e->gateway);
    pd.Bind(6, e->profile).Bind(7, e->firmware).Bind(8, e->model).Bind(9, e->first_seen_ms).Bind(10, e->last_seen_ms);
    if (e->online) pd.Bind(11, int64_t{*e->online});
    else pd.BindNull(11);
    pd.Bind(12, e->metrics.dump()).Bind(13, e->metrics_ts_ms);
    if (e->location) pd.BindDouble(14, e->location->first).BindDouble(15, e->location->second);
    else pd.BindNull(14).BindNull(15);
    pd.Bind(16, e->expected_interval_ms);
    std::string health = health_of ? health_of(key) : e->health;
    if (health.empty()) pd.BindNull(17);
    else pd.Bind(17, health);
    if (Status st = pd.Run(); !st.ok()) return fail(st);
  }
  auto& pg = impl_->put_gateway;
  for (const auto& key : gateways) {
    const GatewayEntry* e = registry.FindGateway(key);
    if (!e) continue;
    pg.Bind(1, e->site).Bind(2, e->gateway).Bind(3, e->version).Bind(4, int64_t{e->online});
    pg.Bind(5, e->first_seen_ms).Bind(6, e->last_status_ms).Bind(7, e->started_ms).Bind(8, e->status.dump());
    if (Status st = pg.Run(); !st.ok()) return fail(st);
  }
  if (Status st = d.Exec("COMMIT"); !st.ok()) return fail(st);
  return Status::Ok();
}

}  // namespace sanigate::fleet
