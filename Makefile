# pobox: one non-recursive Makefile. Out-of-tree objects in $(O) (default build/).
#   make                      build poboxd and pobox
#   make check                unit tests + fuzz corpora replay (gcc)
#   make SANITIZE=address,undefined check
#   make fuzz                 libFuzzer targets with clang in $(O)/fuzz/
#   make install DESTDIR=... PREFIX=/usr/local
O        ?= build
PREFIX   ?= /usr/local
CC       ?= cc
PKGS     := libcrypt libssl libcrypto libseccomp
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))

WARN     := -Wall -Wextra -Wformat=2 -Wshadow -Wpointer-arith -Wcast-qual \
            -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wnull-dereference \
            -Wno-unused-parameter -Werror=implicit-function-declaration
HARDEN   := -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE -fstack-clash-protection
CFLAGS   ?= -O2 -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(HARDEN) $(CFLAGS) -Isrc $(PKG_CFLAGS) -MMD -MP
LDFLAGS  ?=
ALL_LDFLAGS := -pie -Wl,-z,relro,-z,now -pthread $(LDFLAGS)
ifdef SANITIZE
ALL_CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -U_FORTIFY_SOURCE
ALL_LDFLAGS += -fsanitize=$(SANITIZE)
endif
ifdef WERROR
ALL_CFLAGS += -Werror
endif
# make V=1 shows whole commands.
ifeq ($(V),1)
Q :=
say :=
else
Q := @
say = printf '  %-6s %s\n' $(1) $(2);
endif

LIB_SRCS  := $(sort $(wildcard src/lib/*.c src/proto/*.c src/store/*.c src/auth/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(O)/%.o)
LIBPOBOX  := $(O)/libpobox.a
PROGS     := poboxd pobox
BINS      := $(PROGS:%=$(O)/bin/%)
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(O)/tests/%)
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))
REPLAY_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(O)/tests/replay_%)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(O)/fuzz/%)

all: $(BINS)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(Q)$(call say,CC,$<)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIBPOBOX): $(LIB_OBJS)
	@rm -f $@
	$(Q)$(call say,AR,$@)ar rcs $@ $^

.SECONDEXPANSION:
$(O)/bin/%: $$(addprefix $(O)/,$$(subst .c,.o,$$(wildcard src/$$*/*.c))) $(LIBPOBOX)
	@mkdir -p $(dir $@)
	$(Q)$(call say,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(O)/tests/test_%: $(O)/tests/unit/test_%.o $(O)/tests/unit/testutil.o $(LIBPOBOX)
	@mkdir -p $(dir $@)
	$(Q)$(call say,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(filter %.a,$^) \
	    $(PKG_LIBS) $(shell pkg-config --libs cmocka)

# The auth role's trust boundary, tested on its own (test_authd.c).
$(O)/tests/test_authd: $(O)/src/poboxd/authd.o $(O)/src/poboxd/config.o
# The OAuth verifier role, alone (test_oauthd.c).
$(O)/tests/test_oauthd: $(O)/src/poboxd/oauthd.o $(O)/src/poboxd/config.o
# The pipelined MDA of pobox fetch (test_fetch_mda.c).
$(O)/tests/test_fetch_mda: $(O)/src/pobox/fetch_mda.o
# Both ends of the handoff (test_mailrole.c, test_loginrole.c): poboxd
# but main.o.
$(O)/tests/test_mailrole $(O)/tests/test_loginrole: $(filter-out \
    $(O)/src/poboxd/main.o,$(patsubst %.c,$(O)/%.o,$(wildcard src/poboxd/*.c)))

$(O)/tests/replay_%: $(O)/tests/fuzz/%.o $(O)/tests/fuzz/replay.o $(LIBPOBOX)
	@mkdir -p $(dir $@)
	$(Q)$(call say,LD,$@)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

tests: $(UNIT_BINS) $(REPLAY_BINS)

check: all tests
	@sh tests/unit/run.sh $(O)

# libFuzzer needs clang; a separate object tree keeps the gcc build intact.
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Isrc $(PKG_CFLAGS) \
               -fsanitize=fuzzer,address,undefined
$(O)/fuzz/%: tests/fuzz/%.c $(LIB_SRCS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(LIB_SRCS) $(PKG_LIBS) -pthread

fuzz: $(FUZZ_BINS)

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(O)/bin/poboxd $(DESTDIR)$(PREFIX)/sbin/poboxd
	install -m 755 $(O)/bin/pobox $(DESTDIR)$(PREFIX)/bin/pobox
	install -d $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man1
	-install -m 644 docs/poboxd.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	-install -m 644 docs/pobox.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	-install -m 644 docs/pobox-fetch.1 $(DESTDIR)$(PREFIX)/share/man/man1/

clean:
	rm -rf $(O)

.PHONY: all tests check fuzz install clean
.SECONDARY:
-include $(shell find $(O) -name '*.d' 2>/dev/null)
