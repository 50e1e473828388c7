# Jiankang build. `make run` starts a demo platform; `make test` runs every test.
.SUFFIXES:

PKGS     := libmicrohttpd json-c sqlite3 libpq openssl libsodium icu-uc icu-i18n opencc libqrencode
VERSION  := 0.1.0
CC       := cc
WARN     := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -fno-common -fstack-protector-strong
CPPFLAGS := -D_GNU_SOURCE -DJK_VERSION=\"$(VERSION)\" -Isrc
DEPCFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
DEPLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
OPT      := -O2 -g -D_FORTIFY_SOURCE=2
SANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

LIB_SRC  := $(shell find src -name '*.c' ! -path 'src/cli/main.c' | sort)
MAIN_SRC := src/cli/main.c
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))

OBJ      := $(LIB_SRC:%.c=build/rel/%.o)
SAN_OBJ  := $(LIB_SRC:%.c=build/san/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=build/san/tests/%)
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_NAMES := $(FUZZ_SRC:fuzz/fuzz_%.c=%)
FUZZ_SECONDS ?= 60

PORT ?= 8080

.PHONY: all deps run test test-unit test-fuzz-replay test-api test-browser check format bench fuzz clean

all: jiankang

deps:
	@tools/setup-deps.sh build

jiankang: $(OBJ) build/rel/$(MAIN_SRC:.c=.o)
	$(CC) -o $@ $^ $(DEPLIBS)

build/jiankang-san: $(SAN_OBJ) build/san/$(MAIN_SRC:.c=.o)
	$(CC) $(SANFLAGS) -o $@ $^ $(DEPLIBS)

build/rel/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(WARN) $(OPT) $(CPPFLAGS) $(DEPCFLAGS) -MMD -MP -c -o $@ $<

build/san/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(WARN) $(SANFLAGS) $(CPPFLAGS) $(DEPCFLAGS) -MMD -MP -c -o $@ $<

# Unit tests link the library as an archive, so each takes only the modules it uses.
build/san/libjk.a: $(SAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/san/tests/%: tests/unit/%.c build/san/libjk.a
	@mkdir -p $(@D)
	$(CC) $(WARN) $(SANFLAGS) $(CPPFLAGS) $(DEPCFLAGS) -Itests/unit -MMD -MP -o $@ $< build/san/libjk.a $(DEPLIBS) -lcmocka

# Each fuzz harness replayed over its seed corpus, under the sanitizers, without libFuzzer.
build/san/fuzz/replay_%: fuzz/fuzz_%.c fuzz/replay.c build/san/libjk.a
	@mkdir -p $(@D)
	$(CC) $(WARN) $(SANFLAGS) $(CPPFLAGS) $(DEPCFLAGS) -o $@ $^ $(DEPLIBS)

# Real fuzzing with clang's libFuzzer: make fuzz FUZZ_SECONDS=600
build/fuzz/fuzz_%: fuzz/fuzz_%.c $(LIB_SRC)
	@mkdir -p $(@D)
	clang -g -O1 -fsanitize=fuzzer,address,undefined $(CPPFLAGS) $(DEPCFLAGS) -o $@ $^ $(DEPLIBS)

# The person index benchmark's population generator (bench/match.sh).
build/bench/mpi_gen: bench/mpi_gen.c tests/mpi_population.c $(OBJ)
	@mkdir -p $(@D)
	$(CC) $(WARN) $(OPT) $(CPPFLAGS) $(DEPCFLAGS) -Itests -o $@ $^ $(DEPLIBS)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

run:
	@tools/setup-deps.sh build
	@$(MAKE) --no-print-directory jiankang
	@mkdir -p var
	./jiankang demo --db sqlite:var/jiankang.db
	./jiankang serve --listen 127.0.0.1:$(PORT) --db sqlite:var/jiankang.db

test:
	@tools/setup-deps.sh test
	@$(MAKE) --no-print-directory node_modules/.package-lock.json
	@$(MAKE) --no-print-directory test-unit test-api test-browser

test-unit: $(UNIT_BIN) test-fuzz-replay
	@tools/with-pg.sh tools/run-unit-tests.sh $(UNIT_BIN)

test-fuzz-replay: $(FUZZ_NAMES:%=build/san/fuzz/replay_%)
	@for n in $(FUZZ_NAMES); do build/san/fuzz/replay_$$n fuzz/corpus/$$n/* || exit 1; done

test-api: build/jiankang-san node_modules/.package-lock.json
	python3 tests/api/run.py --binary build/jiankang-san --backend sqlite
	python3 tests/api/run.py --binary build/jiankang-san --backend postgresql

# The pages in Chromium (headless, no sandbox, no background networking) through playwright-core.
test-browser: build/jiankang-san node_modules/.package-lock.json
	JIANKANG_BINARY=build/jiankang-san CHROMIUM=$${CHROMIUM:-/usr/bin/chromium} \
	    node --test --test-concurrency=1 tests/browser/test_*.mjs

check:
	@tools/setup-deps.sh check
	@$(MAKE) --no-print-directory node_modules/.package-lock.json
	clang-format --dry-run -Werror $$(find src tests/unit fuzz -name '*.[ch]' ! -name '*_gen.[ch]')
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	    --suppress=missingIncludeSystem -Isrc src
	@if grep -rnE '\b(sprintf|vsprintf|strcpy|strcat|strncpy|strtok|atoi|atol|gets|sscanf)[[:space:]]*\(' src; then \
	    echo "check: banned functions above (see docs/style.md)"; exit 1; fi
	python3 tools/gen_fhir.py --check
	python3 tools/gen_search.py --check

format:
	clang-format -i $$(find src tests/unit fuzz -name '*.[ch]' ! -name '*_gen.[ch]')

bench: jiankang
	@tools/setup-deps.sh bench
	bench/run.sh

fuzz: $(FUZZ_NAMES:%=build/fuzz/fuzz_%)
	@for n in $(FUZZ_NAMES); do mkdir -p build/fuzz/corpus-$$n && \
	    build/fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	        build/fuzz/corpus-$$n fuzz/corpus/$$n || exit 1; done

clean:
	rm -rf build jiankang

-include $(OBJ:.o=.d) $(SAN_OBJ:.o=.d) build/rel/src/cli/main.d build/san/src/cli/main.d $(UNIT_BIN:=.d)
