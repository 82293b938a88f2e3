# cachesync — PGXS build
EXTENSION = cachesync
MODULE_big = cachesync
DATA = cachesync--1.0.sql
PGFILEDESC = "cachesync - keep Redis in sync with PostgreSQL tables"

OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers -Werror
SHLIB_LINK = -lhiredis

# pg_regress: one file per feature in sql/ with its output in expected/
REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=cachesync

# isolation specs live under test/isolation
ISOLATION = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=cachesync

# TAP tests for the worker, restarts and faults
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)

# Debian's PGXS emits LLVM bitcode with the clang it was built with; skip the
# bitcode when that clang is not installed.
PGXS_CLANG := $(shell sed -n 's/^CLANG *= *//p' $(dir $(PGXS))../Makefile.global)
ifeq ($(wildcard $(PGXS_CLANG)),)
override with_llvm = no
endif

include $(PGXS)

# after the include: Makefile.global resets PROVE_FLAGS
PROVE_FLAGS += -I test/perl

# PGXS tracks no header dependencies here: rebuild every object when a header changes
$(OBJS): $(wildcard src/*.h)
