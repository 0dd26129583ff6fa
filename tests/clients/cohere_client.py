"""The real `cohere` Python client (ClientV2 and Client) against a running bge-rerank server: its
default model name, rank_fields over object documents, max_tokens_per_doc, return_documents. Prints one
JSON line of what the client got back; run by crates/server/tests/clients.rs when
BGE_RERANK_PYTHON names a Python with `cohere` installed.

usage: python3 cohere_client.py BASE_URL
"""
import json
import sys

import cohere

base = sys.argv[1]
docs = ["hi", "The giant panda is a bear species endemic to China.", "Paris is the capital of France."]
v2 = cohere.ClientV2(api_key="unused", base_url=base)
plain = v2.rerank(model="rerank-v3.5", query="what is panda?", documents=docs, top_n=2)
cut = v2.rerank(model="rerank-v3.5", query="what is panda?", documents=docs, max_tokens_per_doc=3)
v1 = cohere.Client(api_key="unused", base_url=base)
fields = v1.rerank(
    model="rerank-english-v3.0",
    query="what is panda?",
    documents=[{"title": "Giant panda", "body": docs[1]}, {"title": "Paris", "body": docs[2]}],
    rank_fields=["title", "body"],
    return_documents=True,
)
print(json.dumps({
    "plain": [[r.index, r.relevance_score] for r in plain.results],
    "cut": [[r.index, r.relevance_score] for r in cut.results],
    "fields": [[r.index, r.relevance_score] for r in fields.results],
    "fields_document": fields.results[0].document.dict() if fields.results[0].document else None,
}))
