#include "store/sqlite_db.h"

namespace sanigate::store {

Stmt& Stmt::operator=(Stmt&& o) noexcept {
  if (this != &o) {
    if (s_) sqlite3_finalize(s_);
    db_ = o.db_;
    s_ = o.s_;
    o.s_ = nullptr;
  }
  return *this;
}

Stmt::~Stmt() {
  if (s_) sqlite3_finalize(s_);
}

Stmt& Stmt::Bind(int i, int64_t v) {
  sqlite3_bind_int64(s_, i, v);
  return *this;
}

Stmt& Stmt::BindDouble(int i, double v) {
  sqlite3_bind_double(s_, i, v);
  return *this;
}

Stmt& Stmt::BindNull(int i) {
  sqlite3_bind_null(s_, i);
  return *this;
}

Stmt& Stmt::Bind(int i, std::string_view v) {
  sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}

Stmt& Stmt::BindBlob(int i, std::string_view v) {
  sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  return *this;
}

bool Stmt::Step(Status* err) {
  int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc != SQLITE_DONE && err) {
    Code code = (rc == SQLITE_FULL || rc == SQLITE_IOERR) ? Code::kResourceExhausted
                : (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB) ? Code::kDataLoss
                : (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) ? Code::kUnavailable
                                                             : Code::kInternal;
    *err = Status(code, std::string("sqlite: ") + sqlite3_errmsg(db_));
  }
  sqlite3_reset(s_);
  return false;
}

Status Stmt::Run() {
  Status st;
  while (Step(&st)) {
  }
  Reset();
  return st;
}

void Stmt::Reset() {
  sqlite3_reset(s_);
  sqlite3_clear_bindings(s_);
}

std::string Stmt::Text(int col) const {
  const void* p = sqlite3_column_blob(s_, col);
  int n = sqlite3_column_bytes(s_, col);
  return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

Db::~Db() {
  if (db_) sqlite3_close_v2(db_);
}

Result<Db> Db::Open(const std::string& path, int flags) {
  Db db;
  db.path_ = path;
  int rc = sqlite3_open_v2(path.c_str(), &db.db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) return db.Error("open");
  sqlite3_busy_timeout(db.db_, 5000);
  sqlite3_extended_result_codes(db.db_, 0);
  return db;
}

Status Db::Exec(std::string_view sql) {
  char* msg = nullptr;
  int rc = sqlite3_exec(db_, std::string(sql).c_str(), nullptr, nullptr, &msg);
  if (rc == SQLITE_OK) return Status::Ok();
  std::string m = msg ? msg : sqlite3_errstr(rc);
  sqlite3_free(msg);
  Code code = (rc == SQLITE_FULL || rc == SQLITE_IOERR) ? Code::kResourceExhausted
              : (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB) ? Code::kDataLoss
                                                               : Code::kInternal;
  return Status(code, path_ + ": " + m);
}

Result<Stmt> Db::Prepare(std::string_view sql) {
  sqlite3_stmt* s = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &s, nullptr);
  if (rc != SQLITE_OK) return Error("prepare");
  return Stmt(db_, s);
}

Status Db::Error(std::string_view what) const {
  int rc = db_ ? sqlite3_errcode(db_) : SQLITE_CANTOPEN;
  std::string m = path_ + ": " + std::string(what) + ": " + (db_ ? sqlite3_errmsg(db_) : "cannot open");
  if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB) return DataLoss(m);
  if (rc == SQLITE_FULL || rc == SQLITE_IOERR) return Exhausted(m);
  return Internal(m);
}

}  // namespace sanigate::store
