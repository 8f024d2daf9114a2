// Secrets out of a TOML config before it goes into `sanictl diag`'s archive. The file is kept as
// the operator wrote it (comments, layout, line numbers) with the value of every secret key
// replaced by "<removed>"; toml++ then checks the result and, if the two disagree, the config is
// re-emitted from the parsed tree instead. A file that does not parse is still redacted (a broken
// config is what support most needs to see), by the same scanner, erring towards removing more.
// Pure functions of their arguments, thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sanigate::ctl {

inline constexpr std::string_view kRemoved = "<removed>";

// Whether a key's value is a secret: password, passwd, passphrase, secret, token, key, psk,
// auth_code, pin, anything ending in key (app_key, nwk_s_key, apps_key, apikey...), and anything
// containing password, passwd, secret, token or credential, except names ending in _file, _dir or
// _path (those hold paths; the files they name are never read). Case-insensitive.
bool IsSecretKey(std::string_view key);

struct RedactedToml {
  std::string text;
  int removed = 0;          // values replaced (in keys and in comments)
  bool parsed = false;      // the input is valid TOML
  std::string parse_error;  // why not ("line 3, column 12: ..."), when !parsed
  bool reemitted = false;   // the scanner's result failed the check: re-emitted by toml++ (no comments)
  // The string values of keys ending in _file (password_file, keys_file...): paths the caller
  // must never read, e.g. a LoRaWAN keys file that is itself TOML.
  std::vector<std::string> file_refs;
  // The secret string values removed, for ScrubSecrets on the archive's other texts.
  std::vector<std::string> secrets;
};

// Redacts one config file's text. Values under a secret key (at any depth: tables, dotted keys,
// inline tables, arrays of tables; a secret table name covers its contents) become "<removed>";
// so do commented-out assignments to secret keys ("# password = ...") and the user:password part
// of URLs in any string. Every removed string value of 4 characters or more is also removed
// wherever else it occurs in the file.
RedactedToml RedactToml(std::string_view text);

// `text` with every occurrence of each secret of 6 characters or more, and the user:password part
// of URLs, replaced by "<removed>": a daemon that logs a refused password or a URL with
// credentials does not leak it through the journal lines.
std::string ScrubSecrets(std::string text, const std::vector<std::string>& secrets);

}  // namespace sanigate::ctl
