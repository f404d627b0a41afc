# Tongyun - top-level Makefile. CMake does the building underneath; this file is the interface people type.
#
#   make                                  build build/tongyun and the static and shared library
#   make test                             build and run every test (ctest), with a bounded fuzz run under clang
#                                         (first installs what only the tests need, see scripts/install-deps.sh)
#   make SANITIZE=address,undefined test  the same under ASan and UBSan, in build-san/
#   make ci                               what CI runs: test, then the sanitizer pass, then a gcc build
#   make demo                             the README's main job: chat with the bundled Tongyun-Mini model
#   make format                           clang-format every C file
#
# CC picks the compiler (clang by default when present: it also gives libFuzzer); BUILD picks the build folder.

CLANG := $(shell command -v clang 2>/dev/null)
ifeq ($(origin CC),default)
  CC := $(if $(CLANG),clang,gcc)
endif
SANITIZE ?=
ifneq ($(SANITIZE),)
  BUILD ?= build-san
else
  BUILD ?= build
endif
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps configure test ci demo format clean

all: configure
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_C_COMPILER=$(CC) -DTY_SANITIZE=$(SANITIZE) $(CMAKE_FLAGS) \
	  | { grep -E '✓|✗|Tongyun' || true; }

test:
	@bash scripts/install-deps.sh --test
	@$(MAKE) --no-print-directory all
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

ci:
	@$(MAKE) --no-print-directory CC=gcc BUILD=build-gcc CMAKE_FLAGS=-DTY_WERROR=ON all
	@$(MAKE) --no-print-directory SANITIZE=address,undefined test
	@$(MAKE) --no-print-directory test

demo: all
	@bash scripts/demo.sh

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	@rm -rf build build-san build-gcc
