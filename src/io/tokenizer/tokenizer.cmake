# tokenizer sources
