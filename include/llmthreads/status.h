// Status and Result<T>: the error channel of every fallible call in llmthreads.
// Library code never aborts on user input; it returns a Status with a message that says
// what is wrong and where (file name, key, tensor, offset). Callers decide from code() (and
// field(), the request field at fault, when there is one), never from the message text.
// Thread-safety: plain values; distinct objects may be used from different threads freely.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace llmt {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad user input (flags, request fields, text)
  kNotFound,         // missing file, key, tensor
  kCorrupt,          // malformed file contents (bad magic, truncated, out-of-range offset)
  kUnsupported,      // valid input we do not handle (unknown arch, tensor type, template)
  kIo,               // OS-level failure (open, mmap, read, write, disk full)
  kOutOfMemory,      // an allocation or a fixed budget was exceeded (memory, a registry's size)
  kInternal,         // a bug: an invariant did not hold
  kCannotFit,     // a request that can never run with these limits (context, KV pool): do not retry
  kOverCapacity,  // a queue or in-flight limit is full now: retryable later
  kCancelled,     // the operation was cancelled (by its caller or a shutdown)
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  // `field`: the request field at fault (e.g. "max_tokens"), "" when none is.
  Status(StatusCode code, std::string message, std::string field)
      : code_(code), message_(std::move(message)), field_(std::move(field)) {}

  static Status ok() { return Status(); }
  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // The request field at fault ("" when none is named), e.g. for an API error's "param".
  const std::string& field() const { return field_; }
  // "corrupt: model.gguf: tensor 'x' data is out of the file" style text.
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::string field_;
};

const char* status_code_name(StatusCode code);

inline Status invalid_argument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status invalid_argument(std::string m, std::string field) {
  return {StatusCode::kInvalidArgument, std::move(m), std::move(field)};
}
inline Status not_found(std::string m) {
  return {StatusCode::kNotFound, std::move(m)};
}
inline Status corrupt(std::string m) {
  return {StatusCode::kCorrupt, std::move(m)};
}
inline Status unsupported(std::string m) {
  return {StatusCode::kUnsupported, std::move(m)};
}
inline Status unsupported(std::string m, std::string field) {
  return {StatusCode::kUnsupported, std::move(m), std::move(field)};
}
inline Status io_error(std::string m) {
  return {StatusCode::kIo, std::move(m)};
}
inline Status internal_error(std::string m) {
  return {StatusCode::kInternal, std::move(m)};
}
inline Status cannot_fit(std::string m, std::string field = {}) {
  return {StatusCode::kCannotFit, std::move(m), std::move(field)};
}
inline Status over_capacity(std::string m) {
  return {StatusCode::kOverCapacity, std::move(m)};
}
inline Status cancelled(std::string m) {
  return {StatusCode::kCancelled, std::move(m)};
}

// Result<T>: either a value or a non-ok Status (a small std::expected for C++20).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be ok
  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  // The error; Status::ok() when a value is held.
  Status status() const { return is_ok() ? Status::ok() : std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace llmt

// Propagate a non-ok Status from an expression returning Status.
#define LLMT_RETURN_IF_ERROR(expr)          \
  do {                                      \
    ::llmt::Status llmt_st_ = (expr);       \
    if (!llmt_st_.is_ok()) return llmt_st_; \
  } while (0)

#define LLMT_CONCAT_INNER_(a, b) a##b
#define LLMT_CONCAT_(a, b) LLMT_CONCAT_INNER_(a, b)
// LLMT_ASSIGN_OR_RETURN(auto x, f()); : declares x from a Result, or returns its Status.
#define LLMT_ASSIGN_OR_RETURN(decl, expr) \
  LLMT_ASSIGN_OR_RETURN_IMPL_(LLMT_CONCAT_(llmt_res_, __LINE__), decl, expr)
#define LLMT_ASSIGN_OR_RETURN_IMPL_(tmp, decl, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.is_ok()) return tmp.status();             \
  decl = std::move(tmp).value()
