# leadloop: one plain Makefile (STYLE.md 10).
#   make            build bin/leadloopd, bin/leadloop, the snippet and the country database
#   make run        install missing Debian packages, build, start leadloopd on 127.0.0.1:8080
#   make test       install missing packages, build, run every test
#   make bench      benchmarks (tests/bench)
#   SANITIZE=address,undefined  builds with sanitizers (into build-san/)

CC      ?= cc
PKGS    := libh2o-evloop lmdb libmaxminddb yaml-0.1 jansson libcjson openssl libcurl
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 $(WARN) -Iinclude -DH2O_USE_LIBUV=0 -D_GNU_SOURCE -pthread
CFLAGS  += $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
ifeq ($(CI),true)
CFLAGS  += -Werror
endif
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
B       := build-san
else
B       := build
endif

TRACKER_SRC := $(wildcard tracker/*.c)
CLI_SRC     := $(wildcard server/cli*.c)
SERVER_SRC  := $(filter-out $(CLI_SRC),$(wildcard server/*.c))
UNIT_SRC    := $(wildcard tests/unit/test_*.c)
MAILER_SRC  := $(wildcard mailer/*.c)
MAILER_OBJ  := $(MAILER_SRC:%.c=$(B)/%.o)
MAILER_LIBS := $(shell pkg-config --libs libesmtp-1.0 gumbo opendkim 2>/dev/null)

TRACKER_OBJ := $(TRACKER_SRC:%.c=$(B)/%.o)
SERVER_OBJ  := $(SERVER_SRC:%.c=$(B)/%.o)
CLI_OBJ     := $(CLI_SRC:%.c=$(B)/%.o)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

LIB     := $(B)/libleadloop.a
GEODB   := build/geo/country.mmdb
SNIPPET := build/ll.min.js

BINDIR  := $(if $(SANITIZE),$(B)/bin,bin)

.PHONY: all deps test-deps run test unit bench clean fuzz fuzz-replay
all: $(BINDIR)/leadloopd $(BINDIR)/leadloop $(BINDIR)/leadloop-mailer $(SNIPPET) $(GEODB)

deps:
	@sh deploy/install-deps.sh

test-deps:
	@sh deploy/install-deps.sh test

# Every object on every header, the directories' own too (server.h, mailer.h, config_int.h...):
# a struct changed in one of them must not leave objects built with its old layout.
$(B)/%.o: %.c $(wildcard include/leadloop/*.h server/*.h mailer/*.h tracker/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIB): $(TRACKER_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BINDIR)/leadloopd: $(SERVER_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BINDIR)/leadloop: $(CLI_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lcsv $(LDLIBS)

$(B)/mailer/%.o: CFLAGS += $(shell pkg-config --cflags libesmtp-1.0 gumbo opendkim 2>/dev/null)
$(BINDIR)/leadloop-mailer: $(MAILER_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(MAILER_LIBS) $(LDLIBS)

$(B)/tests/test_mailer: LDLIBS += $(MAILER_LIBS)
$(B)/tests/test_mailer: $(MAILER_SRC) mailer/mailer.h # it includes the mailer's .c files
$(B)/tests/test_mailer: CFLAGS += $(shell pkg-config --cflags opendkim 2>/dev/null)
$(B)/tests/%: tests/unit/%.c tests/unit/test.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

# A helper of the capture benchmark (tests/bench/run.sh builds it); never part of `all`.
$(B)/bench/tokens: tests/bench/tokens.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

$(SNIPPET): js/ll.js js/build.sh
	@mkdir -p build
	sh js/build.sh js/ll.js $@

$(GEODB): deploy/build-geodb.pl
	@mkdir -p build/geo
	perl deploy/build-geodb.pl /usr/share/tor/geoip /usr/share/tor/geoip6 $@

run: deps
	@$(MAKE) --no-print-directory all
	$(BINDIR)/leadloopd -d var

unit: $(UNIT_BIN)
	@sh tests/run-unit.sh $(UNIT_BIN)

test: test-deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN) $(FUZZ_REPLAY)
	@BINDIR=$(BINDIR) FUZZ_DIR=$(B)/fuzz sh tests/run-all.sh $(UNIT_BIN)

# Fuzz targets (tests/fuzz, STYLE.md 9). `make test` replays each corpus through replay.c built
# with ASan+UBSan ($(B)/fuzz/replay_<name>); `make fuzz` builds the targets with clang and
# libFuzzer (build-fuzz/fuzz_<name>) and runs each for FUZZ_SECONDS on its corpus. Targets link
# an archive of every object but server/main.c (tests/fuzz/stubs.c stands in for it), so a
# target that includes a .c for its statics does not pull that file's object as well.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_LIBSRC  := $(TRACKER_SRC) $(filter-out server/main.c,$(SERVER_SRC)) tests/fuzz/stubs.c
FUZZ_REPLAY  := $(FUZZ_NAMES:%=$(B)/fuzz/replay_%)
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FZ           := build-fuzz
FUZZ_CFLAGS   = $(filter-out -Werror,$(CFLAGS)) -fsanitize=fuzzer-no-link,address,undefined \
               -fno-sanitize-recover=undefined -fno-omit-frame-pointer

$(B)/fuzz/obj/%.o: %.c $(wildcard include/leadloop/*.h) server/server.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FUZZ_SAN) -c -o $@ $<

$(B)/fuzz/libfuzz.a: $(FUZZ_LIBSRC:%.c=$(B)/fuzz/obj/%.o)
	@rm -f $@
	ar rcs $@ $^

$(B)/fuzz/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c tests/fuzz/fuzz.h $(B)/fuzz/libfuzz.a
	$(CC) $(CFLAGS) $(FUZZ_SAN) -o $@ $< tests/fuzz/replay.c $(B)/fuzz/libfuzz.a $(LDLIBS)

$(FZ)/obj/%.o: %.c $(wildcard include/leadloop/*.h) server/server.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FZ)/libfuzz.a: $(FUZZ_LIBSRC:%.c=$(FZ)/obj/%.o)
	@rm -f $@
	ar rcs $@ $^

$(FZ)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FZ)/libfuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FZ)/libfuzz.a $(LDLIBS)

# Targets beyond the server's objects include their .c (mailer/template.c, server/cli_mail.c)
# and link its libraries.
$(B)/fuzz/replay_template $(FZ)/fuzz_template: mailer/template.c mailer/mailer.h
$(B)/fuzz/replay_template $(FZ)/fuzz_template: LDLIBS += $(shell pkg-config --libs gumbo 2>/dev/null)
$(B)/fuzz/replay_csv $(FZ)/fuzz_csv: server/cli_mail.c server/cli.h
$(B)/fuzz/replay_csv $(FZ)/fuzz_csv: LDLIBS += -lcsv

fuzz-replay: $(FUZZ_REPLAY)
	@FUZZ_DIR=$(B)/fuzz sh tests/fuzz/run-replay.sh

fuzz:
	@sh deploy/install-deps.sh fuzz
	@$(MAKE) --no-print-directory -s $(FUZZ_NAMES:%=$(FZ)/fuzz_%)
	@sh tests/fuzz/run-fuzz.sh $(FZ) $(FUZZ_SECONDS) $(FUZZ_NAMES)

bench: test-deps
	@$(MAKE) --no-print-directory all
	@if [ -f tests/bench/run.sh ]; then sh tests/bench/run.sh; \
	 else echo "make bench: no benchmarks yet (tests/bench/run.sh; issue #6)" >&2; exit 1; fi

clean:
	rm -rf build build-san build-fuzz bin
