# leadloop: one plain Makefile (STYLE.md 10).
#   make            build bin/leadloopd, bin/leadloop, the snippet and the country database
#   make run        install missing Debian packages, build, start leadloopd on 127.0.0.1:8080
#   make test       install missing packages, build, run every test
#   make bench      benchmarks (tests/bench)
#   SANITIZE=address,undefined  builds with sanitizers (into build-san/)

CC      ?= cc
PKGS    := libh2o-evloop lmdb libmaxminddb yaml-0.1 jansson openssl
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
MAILER_LIBS := $(shell pkg-config --libs libesmtp-1.0 gumbo 2>/dev/null)

TRACKER_OBJ := $(TRACKER_SRC:%.c=$(B)/%.o)
SERVER_OBJ  := $(SERVER_SRC:%.c=$(B)/%.o)
CLI_OBJ     := $(CLI_SRC:%.c=$(B)/%.o)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

LIB     := $(B)/libleadloop.a
GEODB   := build/geo/country.mmdb
SNIPPET := build/ll.min.js

BINDIR  := $(if $(SANITIZE),$(B)/bin,bin)

.PHONY: all deps test-deps run test unit bench clean
all: $(BINDIR)/leadloopd $(BINDIR)/leadloop $(BINDIR)/leadloop-mailer $(SNIPPET) $(GEODB)

deps:
	@sh deploy/install-deps.sh

test-deps:
	@sh deploy/install-deps.sh test

$(B)/%.o: %.c $(wildcard include/leadloop/*.h)
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

$(B)/mailer/%.o: CFLAGS += $(shell pkg-config --cflags libesmtp-1.0 gumbo 2>/dev/null)
$(BINDIR)/leadloop-mailer: $(MAILER_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(MAILER_LIBS) $(LDLIBS)

$(B)/tests/%: tests/unit/%.c tests/unit/test.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

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
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@BINDIR=$(BINDIR) sh tests/run-all.sh $(UNIT_BIN)

bench: test-deps
	@$(MAKE) --no-print-directory all
	@sh tests/bench/run.sh

clean:
	rm -rf build build-san bin
