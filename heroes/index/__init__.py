"""FAISS indexes for faces, scenes and PDQ hashes, with their id maps."""
