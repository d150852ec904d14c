# backend: etcd's MVCC storage backend on LMDB, for Lua 5.4.
# Every variable can be overridden: make CC=clang CFLAGS=-O0 PREFIX=/usr ...

LUA        ?= lua5.4
BUSTED     ?= busted
LUACHECK   ?= luacheck
VALGRIND   ?= valgrind
PKG_CONFIG ?= pkg-config
LUA_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags lua5.4)
LMDB_LIBS  ?= -llmdb
NETTLE_LIBS ?= -lnettle
CFLAGS     ?= -O2 -g
PREFIX     ?= /usr/local
LUA_CMOD   ?= $(PREFIX)/lib/lua/5.4
LUA_LMOD   ?= $(PREFIX)/share/lua/5.4
BUILD      ?= build
ROCKSPEC   ?= rockspec/backend-scm-1.rockspec
VALGRIND_FLAGS ?= -q --error-exitcode=1 --leak-check=full --fair-sched=yes   # no thread starves under its lock
ASAN_FLAGS ?= -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
TSAN_FLAGS ?= -fsanitize=thread

WARN = -std=c99 -fPIC -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wcast-qual \
       -Wwrite-strings -Wmissing-prototypes -Wstrict-prototypes -Wundef \
       -D_GNU_SOURCE -pthread
ALL_CFLAGS = $(WARN) $(CFLAGS) $(SANFLAGS) -MMD -MP
LIBS_CORE  = $(LMDB_LIBS) $(NETTLE_LIBS) -pthread

# The layers: the engine (csrc/core), etcd's file format beside it (csrc/bolt),
# and the Lua binding (csrc/lua), the only code that sees lua.h.
CORE_SRC = $(wildcard csrc/core/*.c) $(wildcard csrc/bolt/*.c)
CORE_OBJ = $(CORE_SRC:csrc/%.c=$(BUILD)/obj/%.o)
LUA_SRC  = $(wildcard csrc/lua/*.c)
LUA_OBJ  = $(LUA_SRC:csrc/%.c=$(BUILD)/obj/%.o)
TEST_SRC = $(wildcard tests/*.c)
TEST_SRC += $(wildcard tests/core/*.c)
TEST_BIN = $(TEST_SRC:%.c=$(BUILD)/%)
MODULE   = $(BUILD)/backend/core.so

# The one place that sets the Lua search paths for code run from this tree:
# every recipe (busted and the lua5.4 children the specs start, the demo, the
# benchmarks) finds this tree's modules, and the module built in $(BUILD), through
# these two variables in its environment; the defaults (;;) follow, for the Lua
# libraries Debian installs. Lua 5.4 reads the _5_4 names before LUA_PATH and
# LUA_CPATH, which other Lua versions (busted's own `lua`) never see.
# To run busted or lua5.4 by hand: eval "$$(make -s env)".
export LUA_PATH_5_4  = $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
export LUA_CPATH_5_4 = $(CURDIR)/$(BUILD)/?.so;;

# What `make install` puts under PREFIX (and `make uninstall` removes): the C
# module, every Lua module under lua/ at its place below LUA_LMOD, and backendctl.
LUA_MODULES = $(sort $(shell find lua -name '*.lua'))
INSTALLED   = $(DESTDIR)$(LUA_CMOD)/backend/core.so $(DESTDIR)$(PREFIX)/bin/backendctl \
              $(LUA_MODULES:lua/%=$(DESTDIR)$(LUA_LMOD)/%)

.PHONY: all deps check-deps env test check ctest spec lint demo bench bench-etcd install uninstall \
        package-check layers-check asan valgrind tsan faults fuzz fuzz-smoke stress rockspec-check clean
.DELETE_ON_ERROR:

all: $(MODULE)

$(MODULE): $(CORE_OBJ) $(LUA_OBJ)
	@mkdir -p $(@D)
	$(CC) -shared $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS_CORE) $(LIBS)

# Only the binding sees the Lua headers: the core must not depend on Lua.
$(LUA_OBJ): BINDING_CFLAGS = $(LUA_CFLAGS)

# Hidden: core.so exports only luaopen_backend_core (the tests link the objects
# themselves, which visibility does not affect).
$(BUILD)/obj/%.o: csrc/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(BINDING_CFLAGS) $(ALL_CFLAGS) -fvisibility=hidden -Icsrc -c -o $@ $<

$(BUILD)/obj/tests/%.o: tests/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Icsrc -c -o $@ $<

$(TEST_BIN): $(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(CORE_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS_CORE) $(LIBS)

# The plain-LMDB side of the benchmarks (not part of `all`), with the core
# for the engine's C API on the Lua side's file (w3b-file).
$(BUILD)/bench/lmdb_bench: bench/lmdb_bench.c $(CORE_OBJ) csrc/core/backend.h
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(WARN) $(CFLAGS) $(SANFLAGS) -Icsrc $(LDFLAGS) -o $@ \
	  bench/lmdb_bench.c $(CORE_OBJ) $(LIBS_CORE) $(LIBS)

# Plain LMDB called from Lua, for the Lua side's floors (not part of `all`).
$(BUILD)/bench/lmdb_plain.so: bench/lmdb_lua.c
	@mkdir -p $(@D)
	$(CC) -shared $(CPPFLAGS) $(WARN) $(CFLAGS) $(SANFLAGS) $(LUA_CFLAGS) $(LDFLAGS) -o $@ \
	  bench/lmdb_lua.c $(LMDB_LIBS) $(LIBS)

# The etcd side (optional, not in CI): etcd 3.4's backend from Debian's golang-go and
# golang-etcd-server-dev, built offline in GOPATH mode.
GO          ?= go
ETCD_GOPATH ?= /usr/share/gocode
GO_ENV      = GO111MODULE=off GOPATH=$(ETCD_GOPATH) GOCACHE=$(abspath $(BUILD))/gocache
$(BUILD)/bench/etcd_bench: bench/etcd_bench.go
	@mkdir -p $(@D)
	$(GO_ENV) $(GO) build -o $@ bench/etcd_bench.go

# bbolt's own tx.Check() of an exported file, the same way (spec/export_spec.lua
# builds it when Go and bbolt's source are there, and skips it otherwise).
$(BUILD)/bench/bolt_check: bench/bolt_check.go
	@mkdir -p $(@D)
	$(GO_ENV) $(GO) build -o $@ bench/bolt_check.go

# `deps` installs the Debian packages (apt-get, as root or with sudo); every
# other target only checks that they are there and says what is missing.
deps:
	@bash scripts/install-deps

check-deps:
	@bash scripts/install-deps --check

# The search paths above as shell commands: eval "$$(make -s env)".
env:
	@echo "export LUA_PATH_5_4='$(LUA_PATH_5_4)'"
	@echo "export LUA_CPATH_5_4='$(LUA_CPATH_5_4)'"

# Sub-makes keep the steps in order under -j. `check` is the quick loop;
# `test` (what CI runs) adds the sanitizer and valgrind runs.
check: check-deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory layers-check
	@$(MAKE) --no-print-directory ctest
	@$(MAKE) --no-print-directory faults
	@$(MAKE) --no-print-directory spec
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory rockspec-check
	@$(MAKE) --no-print-directory package-check

test: check
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory tsan
	@$(MAKE) --no-print-directory valgrind
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory powerloss-smoke

ctest: $(TEST_BIN)
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; $(RUN) ./$$t; done

spec: all
	BACKEND_BUILD=$(BUILD) $(SPEC_RUN) $(BUSTED) $(SPEC_FLAGS)

lint:
	$(LUACHECK) .

demo: check-deps
	@$(MAKE) --no-print-directory all
	$(LUA) examples/demo.lua

# The benchmark suite (bench/README.md): BENCH_ARGS="--n 100000 --runs 1" for a quick look.
BENCH_ARGS ?=
bench: check-deps
	@$(MAKE) --no-print-directory all $(BUILD)/bench/lmdb_bench $(BUILD)/bench/lmdb_plain.so
	$(LUA) bench/bench.lua --lmdb $(BUILD)/bench/lmdb_bench --plain $(BUILD)/bench/lmdb_plain.so $(BENCH_ARGS)

bench-etcd: check-deps
	@$(MAKE) --no-print-directory all $(BUILD)/bench/lmdb_bench $(BUILD)/bench/lmdb_plain.so \
	  $(BUILD)/bench/etcd_bench
	$(LUA) bench/bench.lua --lmdb $(BUILD)/bench/lmdb_bench --plain $(BUILD)/bench/lmdb_plain.so \
	  --etcd $(BUILD)/bench/etcd_bench $(BENCH_ARGS)

# backendctl is installed with one line added after its first: the prefix's
# module directories go first in its search paths, so it runs from any PREFIX
# without LUA_PATH (Lua looks in /usr/local by itself, but nowhere else).
install: all
	install -D -m 0755 $(MODULE) $(DESTDIR)$(LUA_CMOD)/backend/core.so
	@set -e; for f in $(LUA_MODULES); do \
	  echo "install -D -m 0644 $$f $(DESTDIR)$(LUA_LMOD)/$${f#lua/}"; \
	  install -D -m 0644 $$f $(DESTDIR)$(LUA_LMOD)/$${f#lua/}; done
	install -d $(DESTDIR)$(PREFIX)/bin
	{ sed -n 1p bin/backendctl; \
	  echo 'package.path = "$(LUA_LMOD)/?.lua;$(LUA_LMOD)/?/init.lua;" .. package.path; package.cpath = "$(LUA_CMOD)/?.so;" .. package.cpath   -- make install'; \
	  sed 1d bin/backendctl; } > $(BUILD)/backendctl
	install -m 0755 $(BUILD)/backendctl $(DESTDIR)$(PREFIX)/bin/backendctl

# Removes the files `make install` puts (the same PREFIX and DESTDIR), then
# the backend/ directories it made once they are empty; nothing else.
uninstall:
	rm -f $(INSTALLED)
	@for d in $(sort $(dir $(LUA_MODULES:lua/%=$(DESTDIR)$(LUA_LMOD)/%)) $(DESTDIR)$(LUA_CMOD)/backend/); do \
	  echo "$$d"; done | sort -r | while read -r d; do [ ! -d "$$d" ] || rmdir --ignore-fail-on-non-empty "$$d"; done

# The packaging as a user meets it, from outside the tree: `luarocks make` into
# a temporary tree and `make install`/`uninstall` into a temporary prefix, each
# then used from /tmp with nothing but its own paths (scripts/package-check).
package-check: all
	@bash scripts/package-check

# The C tests and the whole busted suite under AddressSanitizer+UBSan (lua5.4
# itself is not instrumented, so the runtimes are preloaded), then valgrind.
SPEC_FLAGS ?= --lua=$(LUA)
SAN_PRELOAD = $(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libubsan.so)
asan:
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(MAKE) --no-print-directory BUILD=build-asan SANFLAGS='$(ASAN_FLAGS)' ctest
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(MAKE) --no-print-directory BUILD=build-asan SANFLAGS='$(ASAN_FLAGS)' \
	  SPEC_RUN='LD_PRELOAD="$(SAN_PRELOAD)"' spec

# busted re-runs itself under --lua's interpreter: --ignore-lua keeps valgrind on it.
valgrind: all
	@BACKEND_TEST_QUICK=1 $(MAKE) --no-print-directory RUN='$(VALGRIND) $(VALGRIND_FLAGS)' ctest faults
	@$(MAKE) --no-print-directory SPEC_RUN='$(VALGRIND) $(VALGRIND_FLAGS) $(LUA)' \
	  SPEC_FLAGS='--ignore-lua' BUSTED='$(shell command -v $(BUSTED))' spec

# Fault injection: an LD_PRELOAD shim fails chosen writes, syncs and renames
# (ENOSPC, EIO) under the core while fault_test checks nothing is lost.
FAULT_SHIM = $(BUILD)/tests/faults/faultfs.so
FAULT_TEST = $(BUILD)/tests/faults/fault_test
faults: $(FAULT_SHIM) $(FAULT_TEST)
	LD_PRELOAD=$(abspath $(FAULT_SHIM)) $(RUN) ./$(FAULT_TEST)

# Not linked with the core: it only stands between the process and libc.
$(FAULT_SHIM): tests/faults/faultfs.c tests/faults/faultfs.h
	@mkdir -p $(@D)
	$(CC) -shared $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< -ldl $(LIBS)

$(FAULT_TEST): $(BUILD)/obj/tests/faults/fault_test.o $(CORE_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS_CORE) -ldl $(LIBS)

# libFuzzer (clang, libclang-rt-14-dev): ops_fuzz drives the core with op
# sequences checked against a model; bolt_fuzz opens and walks hostile bbolt
# files. `make fuzz-NAME` fuzzes a copy of tests/fuzz/corpus/NAME for FUZZ_TIME
# seconds (crashes land in build/fuzz/NAME/); fuzz-smoke runs both briefly.
FUZZ_CC    ?= clang
FUZZ_FLAGS ?= -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -g -O1
FUZZ_TIME  ?= 60
FUZZ_DIR    = $(BUILD)/fuzz
FUZZ_OBJ    = $(CORE_SRC:csrc/%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_ARGS_ops  = -max_len=2048 -len_control=0   # state bugs need long op sequences
FUZZ_ARGS_bolt = -max_len=65536

$(FUZZ_DIR)/obj/%.o: csrc/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS) $(WARN) $(FUZZ_FLAGS) -MMD -MP -Icsrc -c -o $@ $<

$(FUZZ_DIR)/%_fuzz: tests/fuzz/%_fuzz.c $(FUZZ_OBJ)
	$(FUZZ_CC) $(CPPFLAGS) $(WARN) $(FUZZ_FLAGS) -Icsrc $(LDFLAGS) -o $@ $^ $(LIBS_CORE)

# Exits non-zero on a crash, a model mismatch, a leak or a hang (-timeout).
fuzz-%: $(FUZZ_DIR)/%_fuzz
	@mkdir -p $(FUZZ_DIR)/$*/corpus
	@cp tests/fuzz/corpus/$*/* $(FUZZ_DIR)/$*/corpus/
	@./$< -max_total_time=$(FUZZ_TIME) -timeout=20 $(FUZZ_ARGS_$*) \
	  -artifact_prefix=$(FUZZ_DIR)/$*/ $(FUZZ_DIR)/$*/corpus 2>$(FUZZ_DIR)/$*/log; rc=$$?; \
	  grep -E '^#[0-9]+[[:space:]]+DONE' $(FUZZ_DIR)/$*/log; \
	  [ $$rc = 0 ] || { tail -n 60 $(FUZZ_DIR)/$*/log; exit $$rc; }

fuzz: fuzz-ops fuzz-bolt

fuzz-smoke:
	@$(MAKE) --no-print-directory FUZZ_TIME=30 fuzz

# The crash harness (spec/support/crash.lua) at length (spec/crash_spec.lua runs 200 trials in `spec`):
# STRESS_TRIALS SIGKILL trials; BACKEND_SEED=n replays a run's configs and kills.
STRESS_TRIALS ?= 1000
stress: all
	BACKEND_CRASH_TRIALS=$(STRESS_TRIALS) $(BUSTED) --lua=$(LUA) spec/crash_spec.lua

# Reader threads, writer, committer, snapshots and defrag under ThreadSanitizer.
tsan:
	@$(MAKE) --no-print-directory BUILD=build-tsan SANFLAGS='$(TSAN_FLAGS)' build-tsan/tests/threads_test
	TSAN_OPTIONS=halt_on_error=1 BACKEND_TEST_SECONDS=5 build-tsan/tests/threads_test

# The core's files call each other without a circle; each layer uses only
# what it may (scripts/layers-check.lua).
layers-check: all
	$(LUA) scripts/layers-check.lua $(BUILD)

rockspec-check:
	$(LUA) scripts/rockspec-check.lua $(ROCKSPEC)

# backend/ and csrc/*.o are what `luarocks make` leaves behind.
clean:
	rm -rf build build-asan build-tsan backend $(shell find csrc -name '*.o')

-include $(wildcard $(BUILD)/obj/*/*.d $(BUILD)/obj/tests/faults/*.d $(BUILD)/fuzz/obj/*/*.d)
-include $(wildcard $(BUILD)/obj/tests/core/*.d)

# ---- Power loss (tests/powerloss/README.md): an LD_PRELOAD recorder logs every
# file-system call of a workload on its directory; the replayer builds the crash
# states a power cut could leave (POSIX persistence model, torn sector writes)
# and checks each. PL_SEED reproduces a run's states; PL_STATES sizes it.
PL_SHIM    = $(BUILD)/tests/powerloss/plrec.so
PL_DIR     = $(BUILD)/powerloss
PL_SEED   ?= 1
PL_STATES ?= 12000
PL_JOBS   ?= 2
PL_RUN     = $(LUA) tests/powerloss/powerloss.lua --shim $(PL_SHIM) \
             --seed $(PL_SEED) --jobs $(PL_JOBS)
.PHONY: powerloss powerloss-smoke powerloss-mutants

$(PL_SHIM): tests/powerloss/plrec.c
	@mkdir -p $(@D)
	$(CC) -shared $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< -ldl $(LIBS)

powerloss: all $(PL_SHIM)
	$(PL_RUN) --out $(PL_DIR)/full --states $(PL_STATES) run

powerloss-smoke: all $(PL_SHIM)
	$(PL_RUN) --out $(PL_DIR)/smoke --states 600 --small run

powerloss-mutants: all $(PL_SHIM)
	$(PL_RUN) --out $(PL_DIR)/mutants --states 1500 --small mutants
