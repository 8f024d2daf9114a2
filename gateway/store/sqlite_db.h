// Thin RAII wrappers over sqlite3 connections and prepared statements, returning Status with the
// database path and SQLite's own message. One connection per thread; not thread-safe themselves.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "core/status.h"

namespace sanigate::store {

class Stmt {
 public:
  Stmt() = default;
  Stmt(sqlite3* db, sqlite3_stmt* s) : db_(db), s_(s) {}
  Stmt(Stmt&& o) noexcept : db_(o.db_), s_(o.s_) { o.s_ = nullptr; }
  Stmt& operator=(Stmt&& o) noexcept;
  ~Stmt();

  Stmt& Bind(int i, int64_t v);
  Stmt& Bind(int i, std::string_view v);  // as TEXT
  Stmt& BindBlob(int i, std::string_view v);
  Stmt& BindDouble(int i, double v);
  Stmt& BindNull(int i);
  // SQLITE_ROW -> true, SQLITE_DONE -> false (and resets), error -> Status in *err.
  bool Step(Status* err);
  Status Run();  // step to completion and reset
  void Reset();
  int64_t Int(int col) const { return sqlite3_column_int64(s_, col); }
  double Double(int col) const { return sqlite3_column_double(s_, col); }
  std::string Text(int col) const;
  bool IsNull(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* s_ = nullptr;
};

class Db {
 public:
  Db() = default;
  Db(Db&& o) noexcept : db_(o.db_), path_(std::move(o.path_)) { o.db_ = nullptr; }
  Db& operator=(Db&& o) noexcept {
    std::swap(db_, o.db_);
    std::swap(path_, o.path_);
    return *this;
  }
  ~Db();
  static Result<Db> Open(const std::string& path, int flags);

  Status Exec(std::string_view sql);
  Result<Stmt> Prepare(std::string_view sql);
  Status Error(std::string_view what) const;  // maps SQLite's error to our Code
  sqlite3* raw() const { return db_; }
  const std::string& path() const { return path_; }

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

}  // namespace sanigate::store
