"""Where records and chunk bytes live, behind one interface.

``interface`` says what any store offers (records, refs, which chunks exist, where
their bytes are, reading and listing blobs); ``index`` is the LMDB database (the only
module that imports lmdb); ``blobs`` the object and pack files (the only module that
opens them); ``local`` puts the two together as the local store; ``reader`` is the one
read path for chunk bytes (locate, read, verify, re-locate after gc moved a chunk).
"""
