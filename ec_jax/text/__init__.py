"""Tokenizers (from GGUF metadata, tokenizer.json or a saved folder) and chat templates."""

from ec_jax.text.chat_template import ChatTemplateError
from ec_jax.text.chat_template import PromptTooLongError
from ec_jax.text.chat_template import check_prompt_length
from ec_jax.text.chat_template import encode_prompt
from ec_jax.text.chat_template import render_chat_template
from ec_jax.text.pre_tokenizers import UnknownPreTokenizerError
from ec_jax.text.tokenizer import Tokenizer
from ec_jax.text.tokenizer import TokenizerLoadError
from ec_jax.text.tokenizer import from_gguf
from ec_jax.text.tokenizer import from_gguf_metadata
from ec_jax.text.tokenizer import from_hf_folder
from ec_jax.text.tokenizer import from_saved_folder
from ec_jax.text.tokenizer import has_saved_tokenizer
from ec_jax.text.tokenizer import load_tokenizer
from ec_jax.text.tokenizer import save_tokenizer
