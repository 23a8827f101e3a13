// Tests of kv::SwapStore: bitwise round trips in RAM and on disk (with and without lz4), spilling
// past the RAM limit, limits without a directory, damaged files, wrong sizes, fault injection of a
// full disk, clean-up of the private directory, and the throughput probe.
#include "kv/swap-store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace llmt::kv {
namespace {

namespace fs = std::filesystem;

// A fresh base directory per test, removed afterwards.
class SwapStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "llmt-swap-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    base_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(base_, fs::perms::owner_all, fs::perm_options::add, ec);
    for (const auto& d : fs::recursive_directory_iterator(base_, ec)) {
      if (d.is_directory())
        fs::permissions(d.path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
    fs::remove_all(base_, ec);
  }

  std::unique_ptr<SwapStore> make(SwapStoreOptions o) {
    auto r = SwapStore::create(o);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? std::move(r).value() : nullptr;
  }

  static std::vector<std::string> files_in(const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& d : fs::directory_iterator(dir)) out.push_back(d.path().string());
    return out;
  }

  std::string base_;
};

// Parts of odd sizes (including empty ones); halves compressible, halves random.
struct Parts {
  std::vector<std::vector<uint8_t>> data;

  explicit Parts(std::vector<size_t> sizes, uint32_t seed) {
    uint64_t x = 0x9E3779B97F4A7C15ull ^ seed;
    for (size_t n : sizes) {
      std::vector<uint8_t> v(n);
      for (size_t i = 0; i < n; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[i] = i < n / 2 ? static_cast<uint8_t>(i / 64 + seed) : static_cast<uint8_t>(x >> 24);
      }
      data.push_back(std::move(v));
    }
  }
  std::vector<std::span<const uint8_t>> in() const {
    std::vector<std::span<const uint8_t>> s;
    for (const auto& v : data) s.emplace_back(v);
    return s;
  }
  size_t total() const {
    size_t t = 0;
    for (const auto& v : data) t += v.size();
    return t;
  }
};

// Output buffers with the sizes of `p`, pre-filled with a byte that is not the answer.
struct Out {
  std::vector<std::vector<uint8_t>> data;
  explicit Out(const Parts& p, uint8_t fill = 0xA5) {
    for (const auto& v : p.data) data.emplace_back(v.size(), fill);
  }
  std::vector<std::span<uint8_t>> out() {
    std::vector<std::span<uint8_t>> s;
    for (auto& v : data) s.emplace_back(v);
    return s;
  }
};

const std::vector<size_t> kOddSizes = {0, 1, 7, 4099, 0, 65537, 300001, 3};

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// ---- round trips ----------------------------------------------------------------------------

struct RoundTripCase {
  SwapWhere where;
  SwapCompression compression;
  SwapWhere expected;
};

class SwapRoundTrip : public SwapStoreTest, public ::testing::WithParamInterface<RoundTripCase> {};

TEST_P(SwapRoundTrip, RestoresBitwiseAndRemoves) {
  const RoundTripCase c = GetParam();
  SwapStoreOptions o;
  o.dir = base_ + "/swap";
  o.compression = c.compression;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(fs::is_directory(store->disk_dir()));

  Parts a(kOddSizes, 1), b({12345, 0, 54321}, 2);
  auto wa = store->put(10, a.in(), c.where);
  ASSERT_TRUE(wa.is_ok()) << wa.status().to_string();
  EXPECT_EQ(*wa, c.expected);
  auto wb = store->put(11, b.in(), c.where);
  ASSERT_TRUE(wb.is_ok()) << wb.status().to_string();
  EXPECT_TRUE(store->contains(10));
  EXPECT_TRUE(store->contains(11));

  SwapStats st = store->stats();
  EXPECT_EQ(st.n_puts, 2u);
  EXPECT_EQ(st.bytes_in_total, a.total() + b.total());
  const bool disk = c.expected == SwapWhere::kDisk;
  EXPECT_EQ(st.n_entries_disk, disk ? 2u : 0u);
  EXPECT_EQ(st.n_entries_ram, disk ? 0u : 2u);
  EXPECT_EQ(st.bytes_ram + st.bytes_disk, st.bytes_stored_total);
  EXPECT_EQ(files_in(store->disk_dir()).size(), disk ? 2u : 0u);
  if (c.compression == SwapCompression::kLz4) {
    EXPECT_LT(st.bytes_stored_total, st.bytes_in_total);  // the halves with runs compress
  } else {
    EXPECT_EQ(st.bytes_stored_total, st.bytes_in_total);
  }

  // Take in the other order, into fresh buffers.
  Out ob(b), oa(a);
  ASSERT_TRUE(store->take(11, ob.out()).is_ok());
  EXPECT_EQ(ob.data, b.data);
  Status s = store->take(10, oa.out());
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(oa.data, a.data);

  EXPECT_FALSE(store->contains(10));
  EXPECT_FALSE(store->contains(11));
  st = store->stats();
  EXPECT_EQ(st.n_entries_ram + st.n_entries_disk, 0u);
  EXPECT_EQ(st.bytes_ram + st.bytes_disk, 0u);
  EXPECT_EQ(st.n_gets, 2u);
  EXPECT_TRUE(files_in(store->disk_dir()).empty());
  EXPECT_EQ(store->take(10, oa.out()).code(), StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(
    All, SwapRoundTrip,
    ::testing::Values(RoundTripCase{SwapWhere::kRam, SwapCompression::kNone, SwapWhere::kRam},
                      RoundTripCase{SwapWhere::kDisk, SwapCompression::kNone, SwapWhere::kDisk},
                      RoundTripCase{SwapWhere::kAuto, SwapCompression::kNone, SwapWhere::kRam},
                      RoundTripCase{SwapWhere::kRam, SwapCompression::kLz4, SwapWhere::kRam},
                      RoundTripCase{SwapWhere::kDisk, SwapCompression::kLz4, SwapWhere::kDisk},
                      RoundTripCase{SwapWhere::kAuto, SwapCompression::kLz4, SwapWhere::kRam}));

TEST_F(SwapStoreTest, EmptyEntriesRoundTrip) {
  SwapStoreOptions o;
  o.dir = base_;
  o.compression = SwapCompression::kLz4;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  Parts none({}, 0), zeros({0, 0}, 0);
  ASSERT_TRUE(store->put(1, none.in(), SwapWhere::kRam).is_ok());
  ASSERT_TRUE(store->put(2, zeros.in(), SwapWhere::kDisk).is_ok());
  Out o1(none), o2(zeros);
  EXPECT_TRUE(store->take(1, o1.out()).is_ok());
  EXPECT_TRUE(store->take(2, o2.out()).is_ok());
  EXPECT_EQ(store->stats().n_gets, 2u);
}

TEST_F(SwapStoreTest, Lz4StoresIncompressiblePartsRawAndCompressibleSmall) {
  SwapStoreOptions o;
  o.compression = SwapCompression::kLz4;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  std::vector<uint8_t> zeros(1 << 20, 0), noise(1 << 16);
  uint64_t x = 88172645463325252ull;
  for (auto& b : noise) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<uint8_t>(x);
  }
  std::vector<std::span<const uint8_t>> in1 = {zeros};
  std::vector<std::span<const uint8_t>> in2 = {noise};
  ASSERT_TRUE(store->put(1, in1).is_ok());
  EXPECT_LT(store->stats().bytes_ram, zeros.size() / 100);
  ASSERT_TRUE(store->put(2, in2).is_ok());
  EXPECT_EQ(store->stats().bytes_stored_total - store->stats().bytes_ram + noise.size(),
            noise.size());
  std::vector<uint8_t> back1(zeros.size(), 7), back2(noise.size(), 7);
  std::vector<std::span<uint8_t>> out1 = {back1}, out2 = {back2};
  ASSERT_TRUE(store->take(1, out1).is_ok());
  ASSERT_TRUE(store->take(2, out2).is_ok());
  EXPECT_EQ(back1, zeros);
  EXPECT_EQ(back2, noise);
}

// ---- limits -----------------------------------------------------------------------------------

TEST_F(SwapStoreTest, AutoSpillsToDiskPastTheRamLimit) {
  SwapStoreOptions o;
  o.dir = base_;
  o.ram_limit_bytes = 1000000;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  std::vector<Parts> entries;
  for (uint32_t i = 0; i < 5; ++i)
    entries.emplace_back(std::vector<size_t>{150000, 150001}, 10 + i);
  std::vector<SwapWhere> got;
  for (uint32_t i = 0; i < 5; ++i) {
    auto w = store->put(100 + i, entries[i].in());
    ASSERT_TRUE(w.is_ok()) << w.status().to_string();
    got.push_back(*w);
  }
  // 300001 bytes each: three fit under 1,000,000.
  EXPECT_EQ(got, (std::vector<SwapWhere>{SwapWhere::kRam, SwapWhere::kRam, SwapWhere::kRam,
                                         SwapWhere::kDisk, SwapWhere::kDisk}));
  SwapStats st = store->stats();
  EXPECT_EQ(st.n_entries_ram, 3u);
  EXPECT_EQ(st.n_entries_disk, 2u);
  EXPECT_EQ(st.bytes_ram, 3u * 300001u);
  EXPECT_EQ(st.bytes_disk, 2u * 300001u);
  EXPECT_EQ(files_in(store->disk_dir()).size(), 2u);

  // Taking a RAM entry frees room: the next put goes to RAM again.
  Out back(entries[0]);
  ASSERT_TRUE(store->take(100, back.out()).is_ok());
  EXPECT_EQ(back.data, entries[0].data);
  Parts again({300001}, 99);
  auto w = store->put(200, again.in());
  ASSERT_TRUE(w.is_ok());
  EXPECT_EQ(*w, SwapWhere::kRam);

  for (uint32_t i = 1; i < 5; ++i) {
    Out o2(entries[i]);
    ASSERT_TRUE(store->take(100 + i, o2.out()).is_ok());
    EXPECT_EQ(o2.data, entries[i].data) << i;
  }
}

TEST_F(SwapStoreTest, NoDirectoryOverLimitIsOutOfMemoryAndStoresNothing) {
  SwapStoreOptions o;
  o.ram_limit_bytes = 100000;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->disk_dir().empty());
  Parts small({60000}, 1), big({50000}, 2);
  ASSERT_TRUE(store->put(1, small.in()).is_ok());
  auto w = store->put(2, big.in());
  ASSERT_FALSE(w.is_ok());
  EXPECT_EQ(w.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(w.status().message().find("100000"), std::string::npos) << w.status().message();
  EXPECT_FALSE(store->contains(2));
  SwapStats st = store->stats();
  EXPECT_EQ(st.n_puts, 1u);
  EXPECT_EQ(st.n_entries_ram, 1u);
  EXPECT_EQ(st.bytes_ram, 60000u);
  // Explicit disk without a directory.
  auto d = store->put(3, small.in(), SwapWhere::kDisk);
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(store->contains(3));
  // The first entry is intact.
  Out back(small);
  ASSERT_TRUE(store->take(1, back.out()).is_ok());
  EXPECT_EQ(back.data, small.data);
}

TEST_F(SwapStoreTest, RamOnlyOverLimitFailsEvenWithDirectory) {
  SwapStoreOptions o;
  o.dir = base_;
  o.ram_limit_bytes = 1000;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  Parts p({1001}, 3);
  auto w = store->put(1, p.in(), SwapWhere::kRam);
  EXPECT_EQ(w.status().code(), StatusCode::kOutOfMemory);
  EXPECT_FALSE(store->contains(1));
  EXPECT_TRUE(files_in(store->disk_dir()).empty());
}

TEST_F(SwapStoreTest, SpareBuffersStayWithinTheRamLimit) {
  SwapStoreOptions o;
  o.ram_limit_bytes = 1000000;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  Parts a({300000, 300000}, 1), b({250000}, 2);
  ASSERT_TRUE(store->put(1, a.in()).is_ok());
  Out back(a);
  ASSERT_TRUE(store->take(1, back.out()).is_ok());
  EXPECT_EQ(back.data, a.data);
  EXPECT_EQ(store->stats().bytes_ram_spare, 600000u);  // kept for reuse
  // Reused for the same sizes: the data must still come back exactly.
  ASSERT_TRUE(store->put(2, a.in()).is_ok());
  EXPECT_EQ(store->stats().bytes_ram_spare, 0u);
  Out back2(a, 0);
  ASSERT_TRUE(store->take(2, back2.out()).is_ok());
  EXPECT_EQ(back2.data, a.data);
  // Other sizes: held + spare never exceed the limit.
  for (uint64_t k = 10; k < 13; ++k) {
    ASSERT_TRUE(store->put(k, b.in()).is_ok());
    SwapStats st = store->stats();
    EXPECT_LE(st.bytes_ram + st.bytes_ram_spare, o.ram_limit_bytes);
  }
  store->trim();
  EXPECT_EQ(store->stats().bytes_ram_spare, 0u);
  Out back3(b);
  ASSERT_TRUE(store->take(12, back3.out()).is_ok());
  EXPECT_EQ(back3.data, b.data);
}

// ---- damaged files ------------------------------------------------------------------------------

class SwapCorruption : public SwapStoreTest, public ::testing::WithParamInterface<SwapCompression> {
 protected:
  // Puts two disk entries, damages entry 1's file with `damage`, expects kCorrupt on take(1) and
  // entry 2 (and new puts) to work afterwards.
  void check(const std::function<void(const std::string&)>& damage) {
    SwapStoreOptions o;
    o.dir = base_;
    o.compression = GetParam();
    auto store = make(o);
    ASSERT_NE(store, nullptr);
    Parts p1({70000, 0, 33}, 5), p2({4096}, 6);
    ASSERT_TRUE(store->put(1, p1.in(), SwapWhere::kDisk).is_ok());
    auto files = files_in(store->disk_dir());
    ASSERT_EQ(files.size(), 1u);
    const std::string file1 = files[0];
    ASSERT_TRUE(store->put(2, p2.in(), SwapWhere::kDisk).is_ok());
    damage(file1);

    Out back(p1);
    Status s = store->take(1, back.out());
    EXPECT_EQ(s.code(), StatusCode::kCorrupt) << s.to_string();
    EXPECT_NE(s.message().find(file1), std::string::npos) << s.message();
    EXPECT_FALSE(store->contains(1));
    EXPECT_FALSE(fs::exists(file1));
    SwapStats st = store->stats();
    EXPECT_EQ(st.n_entries_disk, 1u);
    EXPECT_EQ(st.n_gets, 0u);

    Out back2(p2);
    ASSERT_TRUE(store->take(2, back2.out()).is_ok());
    EXPECT_EQ(back2.data, p2.data);
    ASSERT_TRUE(store->put(1, p1.in(), SwapWhere::kDisk).is_ok());
    Out back3(p1);
    ASSERT_TRUE(store->take(1, back3.out()).is_ok());
    EXPECT_EQ(back3.data, p1.data);
    EXPECT_TRUE(files_in(store->disk_dir()).empty());
  }
};

TEST_P(SwapCorruption, TruncatedFile) {
  check([](const std::string& f) { fs::resize_file(f, fs::file_size(f) / 2); });
}

TEST_P(SwapCorruption, TruncatedByOneByte) {
  check([](const std::string& f) { fs::resize_file(f, fs::file_size(f) - 1); });
}

TEST_P(SwapCorruption, FlippedPayloadByte) {
  check([](const std::string& f) {
    std::string b = read_all(f);
    b[b.size() - 20] ^= 0x10;
    write_all(f, b);
  });
}

TEST_P(SwapCorruption, FlippedHeaderByte) {
  check([](const std::string& f) {
    std::string b = read_all(f);
    b[60] ^= 0x01;  // in the part table: first part's raw size
    write_all(f, b);
  });
}

TEST_P(SwapCorruption, BadMagic) {
  check([](const std::string& f) {
    std::string b = read_all(f);
    b[0] = 'X';
    write_all(f, b);
  });
}

TEST_P(SwapCorruption, FileRemovedBehindTheStoresBack) {
  SwapStoreOptions o;
  o.dir = base_;
  o.compression = GetParam();
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  Parts p({1000}, 1);
  ASSERT_TRUE(store->put(1, p.in(), SwapWhere::kDisk).is_ok());
  fs::remove(files_in(store->disk_dir())[0]);
  Out back(p);
  EXPECT_EQ(store->take(1, back.out()).code(), StatusCode::kIo);
  EXPECT_FALSE(store->contains(1));
  EXPECT_EQ(store->stats().n_entries_disk, 0u);
}

INSTANTIATE_TEST_SUITE_P(All, SwapCorruption,
                         ::testing::Values(SwapCompression::kNone, SwapCompression::kLz4));

// ---- argument errors --------------------------------------------------------------------------

TEST_F(SwapStoreTest, WrongPartSizesKeepTheEntry) {
  SwapStoreOptions o;
  o.dir = base_;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  Parts p({100, 200}, 4);
  for (SwapWhere where : {SwapWhere::kRam, SwapWhere::kDisk}) {
    ASSERT_TRUE(store->put(7, p.in(), where).is_ok());
    std::vector<uint8_t> a(100, 1), b(201, 2), c(200, 3);
    std::vector<std::span<uint8_t>> wrong_size = {a, b}, wrong_count = {a}, too_many = {a, c, c};
    EXPECT_EQ(store->take(7, wrong_size).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store->take(7, wrong_count).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(store->take(7, too_many).code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(store->contains(7));
    EXPECT_EQ(a, std::vector<uint8_t>(100, 1));  // untouched
    std::vector<std::span<uint8_t>> right = {a, c};
    ASSERT_TRUE(store->take(7, right).is_ok());
    EXPECT_EQ(a, p.data[0]);
    EXPECT_EQ(c, p.data[1]);
  }
}

TEST_F(SwapStoreTest, DuplicateKeyIsRejectedAndKeepsTheFirst) {
  SwapStoreOptions o;
  o.dir = base_;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  Parts first({500}, 1), second({500}, 2);
  ASSERT_TRUE(store->put(42, first.in(), SwapWhere::kDisk).is_ok());
  auto w = store->put(42, second.in(), SwapWhere::kRam);
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  SwapStats st = store->stats();
  EXPECT_EQ(st.n_puts, 1u);
  EXPECT_EQ(st.n_entries_ram, 0u);
  Out back(first);
  ASSERT_TRUE(store->take(42, back.out()).is_ok());
  EXPECT_EQ(back.data, first.data);
}

TEST_F(SwapStoreTest, UnknownKeyAndErase) {
  SwapStoreOptions o;
  o.dir = base_;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  std::vector<std::span<uint8_t>> none;
  EXPECT_EQ(store->take(5, none).code(), StatusCode::kNotFound);
  store->erase(5);  // no-op
  EXPECT_FALSE(store->contains(5));

  Parts p({1234}, 1);
  ASSERT_TRUE(store->put(5, p.in(), SwapWhere::kDisk).is_ok());
  ASSERT_TRUE(store->put(6, p.in(), SwapWhere::kRam).is_ok());
  EXPECT_EQ(files_in(store->disk_dir()).size(), 1u);
  store->erase(5);
  store->erase(6);
  EXPECT_FALSE(store->contains(5));
  EXPECT_FALSE(store->contains(6));
  EXPECT_TRUE(files_in(store->disk_dir()).empty());
  SwapStats st = store->stats();
  EXPECT_EQ(st.n_entries_ram + st.n_entries_disk + st.bytes_ram + st.bytes_disk, 0u);
  Out back(p);
  EXPECT_EQ(store->take(5, back.out()).code(), StatusCode::kNotFound);
}

// ---- directory life cycle
// ------------------------------------------------------------------------

TEST_F(SwapStoreTest, CreatesMissingDirAndDestructorRemovesPrivateDir) {
  SwapStoreOptions o;
  o.dir = base_ + "/a/b/c";
  std::string private_dir;
  {
    auto store = make(o);
    ASSERT_NE(store, nullptr);
    private_dir = store->disk_dir();
    ASSERT_TRUE(fs::is_directory(private_dir));
    EXPECT_EQ(fs::path(private_dir).parent_path(), fs::path(o.dir));
    struct stat st {};
    ASSERT_EQ(::stat(private_dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    Parts p({1000, 2000}, 1);
    ASSERT_TRUE(store->put(1, p.in(), SwapWhere::kDisk).is_ok());
    ASSERT_TRUE(store->put(2, p.in(), SwapWhere::kDisk).is_ok());
    EXPECT_EQ(files_in(private_dir).size(), 2u);
  }
  EXPECT_FALSE(fs::exists(private_dir));
  EXPECT_TRUE(fs::is_directory(o.dir));
}

TEST_F(SwapStoreTest, TwoStoresInOneDirAreSeparate) {
  SwapStoreOptions o;
  o.dir = base_;
  auto s1 = make(o), s2 = make(o);
  ASSERT_NE(s1, nullptr);
  ASSERT_NE(s2, nullptr);
  EXPECT_NE(s1->disk_dir(), s2->disk_dir());
  Parts p({100}, 1), q({100}, 2);
  ASSERT_TRUE(s1->put(1, p.in(), SwapWhere::kDisk).is_ok());
  ASSERT_TRUE(s2->put(1, q.in(), SwapWhere::kDisk).is_ok());
  Out bp(p), bq(q);
  ASSERT_TRUE(s2->take(1, bq.out()).is_ok());
  ASSERT_TRUE(s1->take(1, bp.out()).is_ok());
  EXPECT_EQ(bp.data, p.data);
  EXPECT_EQ(bq.data, q.data);
}

TEST_F(SwapStoreTest, CreateFailsWhenDirIsAFile) {
  SwapStoreOptions o;
  o.dir = base_ + "/file";
  write_all(o.dir, "x");
  auto r = SwapStore::create(o);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIo);
}

// ---- write failures -----------------------------------------------------------------------------

TEST_F(SwapStoreTest, DiskFullLeavesNothingBehind) {
  for (SwapCompression c : {SwapCompression::kNone, SwapCompression::kLz4}) {
    SwapStoreOptions o;
    o.dir = base_;
    o.compression = c;
    o.fail_writes_after_bytes = 50000;  // bytes written to files, cumulative
    auto store = make(o);
    ASSERT_NE(store, nullptr);
    Parts small({10000, 20000}, 1), big({50000, 0, 60000}, 2);
    ASSERT_TRUE(store->put(1, small.in(), SwapWhere::kDisk).is_ok());
    ASSERT_EQ(files_in(store->disk_dir()).size(), 1u);
    const std::string file1 = files_in(store->disk_dir())[0];

    auto w = store->put(2, big.in(), SwapWhere::kDisk);
    ASSERT_FALSE(w.is_ok());
    EXPECT_EQ(w.status().code(), StatusCode::kIo);
    EXPECT_NE(w.status().message().find(store->disk_dir()), std::string::npos)
        << w.status().message();
    EXPECT_NE(w.status().message().find("No space left"), std::string::npos)
        << w.status().message();
    EXPECT_FALSE(store->contains(2));
    EXPECT_EQ(files_in(store->disk_dir()), std::vector<std::string>{file1});  // no partial file
    SwapStats st = store->stats();
    EXPECT_EQ(st.n_puts, 1u);
    EXPECT_EQ(st.n_entries_disk, 1u);
    // The caller's data is untouched, and RAM still works.
    EXPECT_EQ(big.data, Parts({50000, 0, 60000}, 2).data);
    ASSERT_TRUE(store->put(2, big.in(), SwapWhere::kRam).is_ok());
    Out b1(small), b2(big);
    ASSERT_TRUE(store->take(1, b1.out()).is_ok());
    ASSERT_TRUE(store->take(2, b2.out()).is_ok());
    EXPECT_EQ(b1.data, small.data);
    EXPECT_EQ(b2.data, big.data);
  }
}

TEST_F(SwapStoreTest, UnwritableDirectoryIsAnIoError) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: chmod does not stop root from writing";
  SwapStoreOptions o;
  o.dir = base_;
  auto store = make(o);
  ASSERT_NE(store, nullptr);
  ASSERT_EQ(::chmod(store->disk_dir().c_str(), 0500), 0);
  Parts p({1000}, 1);
  auto w = store->put(1, p.in());  // auto: fits in RAM
  ASSERT_TRUE(w.is_ok());
  auto d = store->put(2, p.in(), SwapWhere::kDisk);
  EXPECT_EQ(d.status().code(), StatusCode::kIo);
  EXPECT_NE(d.status().message().find(store->disk_dir()), std::string::npos);
  EXPECT_FALSE(store->contains(2));
  ASSERT_EQ(::chmod(store->disk_dir().c_str(), 0700), 0);
}

// ---- throughput
// -----------------------------------------------------------------------------------

TEST_F(SwapStoreTest, MeasureReportsThroughputAndTouchesNothing) {
  for (SwapCompression c : {SwapCompression::kNone, SwapCompression::kLz4}) {
    SwapStoreOptions o;
    o.dir = base_;
    o.compression = c;
    o.ram_limit_bytes = 1000;  // measure ignores the limit
    auto store = make(o);
    ASSERT_NE(store, nullptr);
    auto t = store->measure(size_t{8} << 20);
    ASSERT_TRUE(t.is_ok()) << t.status().to_string();
    EXPECT_GT(t->ram_bytes_per_s, 1e6);
    EXPECT_GT(t->disk_bytes_per_s, 1e6);
    std::printf(
        "[ measure ] %s: RAM %.2f GB/s, disk %.2f GB/s, stored %.3f of input (8 MiB, put+take)\n",
        c == SwapCompression::kLz4 ? "lz4 " : "none", t->ram_bytes_per_s / 1e9,
        t->disk_bytes_per_s / 1e9, t->stored_fraction);
    EXPECT_GT(t->stored_fraction, 0.0);
    EXPECT_LE(t->stored_fraction, 1.0);
    if (c == SwapCompression::kNone) {
      EXPECT_EQ(t->stored_fraction, 1.0);
    }
    SwapStats st = store->stats();
    EXPECT_EQ(st.n_puts + st.n_gets + st.bytes_in_total + st.n_entries_disk, 0u);
    EXPECT_TRUE(files_in(store->disk_dir()).empty());
  }
  SwapStoreOptions ram_only;
  auto store = make(ram_only);
  ASSERT_NE(store, nullptr);
  auto t = store->measure(3 << 20 | 1);  // odd size
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_GT(t->ram_bytes_per_s, 0);
  EXPECT_EQ(t->disk_bytes_per_s, 0);
  EXPECT_EQ(store->measure(0).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace llmt::kv
