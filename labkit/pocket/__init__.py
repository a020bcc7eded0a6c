"""The embedded pocket LLM: a small Llama that the kit pre-trains from textbook knowledge.

    knowledge   clinical rules with citations (data/knowledge/*.yaml) and the risk they imply
    patients    synthetic patients in the coding of the shipped tables
    abstracts   synthetic medical abstracts from a hand-written lexicon
    corpus      the pre-training examples (chats and documents) and the leak check
    tokenizer   byte-level BPE with single-digit tokens and a ChatML template
    model       the Llama configuration
    batches     tokenization with loss weights, packing into rows
    pretrain    the training run (`labkit pretrain`), checkpoints, loss curve

The shipped model lives in data/models/pocket-llm/ (labkit.loader.POCKET_LLM); load it with
labkit.loader.load_model() and load_tokenizer(). docs/pocket_llm.md tells the whole story.
"""
