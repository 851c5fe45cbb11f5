# Thin wrapper over CMake presets. Each target installs what it needs first (scripts/setup-deps.sh).
NWC_DATA ?= $(abspath ../shared/data)
export NWC_DATA
JOBS ?= $(shell nproc)

.PHONY: deps build test demo asan-test format format-check clean

deps:
	@bash scripts/setup-deps.sh

build: deps
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS)

test: build
	@ctest --preset release -j $(JOBS)

demo: build
	@bash scripts/demo.sh build/release

asan-test: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)
	@ctest --preset asan -j $(JOBS)

format:
	@git ls-files '*.c' '*.h' '*.cpp' '*.hpp' | xargs clang-format -i

format-check:
	@git ls-files '*.c' '*.h' '*.cpp' '*.hpp' | xargs clang-format --dry-run --Werror

clean:
	@rm -rf build
