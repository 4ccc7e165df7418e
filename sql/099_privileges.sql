-------------------------------------------------------------------------------
-- privileges
-- Every role may read the settings (embedding runs with the caller's rights
-- and must find the model); only the extension owner may change them. The
-- corpus and its statistics are granted explicitly by the DBA.
revoke all on @extschema@.hybrid_search_config from public;
grant select on @extschema@.hybrid_search_config to public;
grant select on @extschema@.hybrid_search_settings to public;
revoke all on @extschema@.hybrid_search_token_stats from public;
-- writes to documents look up their source table's embed mode
grant select on @extschema@.hybrid_search_sources to public;
