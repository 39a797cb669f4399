<?php
/**
 * Plugin Name: optiwatch cache token
 * Description: Makes the Optimole plugin put the cache token that optiwatch publishes into every image URL (`cb:` property), without touching the database.
 * Version: 1.0.0
 * License: MIT
 *
 * Install: copy this file to wp-content/mu-plugins/ (must-use plugins load
 * on every request and cannot be switched off from the admin screens).
 *
 * optiwatch writes the token to `[token] file`; this plugin reads that file
 * once per request and overrides `cache_buster_images` in the Optimole
 * plugin's settings (the `optml_settings` option) through WordPress's
 * `option_optml_settings` filter, which runs on every read of the option.
 * Nothing is written to the database, so a persistent object cache (Redis,
 * Memcached) cannot hide the new token and the plugin's own settings save
 * cannot revert it.
 *
 * Where the token file is looked for, first match wins:
 *   1. the constant OPTIWATCH_TOKEN_FILE (define it in wp-config.php);
 *   2. on multisite, WP_CONTENT_DIR/optiwatch-token-<blog id> (per-site
 *      tokens: give each site's rule its own [rules.token] file);
 *   3. WP_CONTENT_DIR/optiwatch-token.
 *
 * A missing, empty or malformed file changes nothing: the plugin's own
 * setting stays in force.
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The token file for the current site.
 */
function optiwatch_token_file() {
	if ( defined( 'OPTIWATCH_TOKEN_FILE' ) ) {
		return OPTIWATCH_TOKEN_FILE;
	}
	$dir = defined( 'WP_CONTENT_DIR' ) ? WP_CONTENT_DIR : ABSPATH . 'wp-content';
	if ( function_exists( 'is_multisite' ) && is_multisite() && function_exists( 'get_current_blog_id' ) ) {
		$site_file = $dir . '/optiwatch-token-' . get_current_blog_id();
		if ( is_readable( $site_file ) ) {
			return $site_file;
		}
	}
	return $dir . '/optiwatch-token';
}

/**
 * The published token, read at most once per request and site; null when
 * there is none usable. Tokens are URL-safe (optiwatch only publishes
 * those); "0" means "no token" to the Optimole plugin, so it is ignored.
 */
function optiwatch_token() {
	static $tokens = array();
	$file = optiwatch_token_file();
	if ( array_key_exists( $file, $tokens ) ) {
		return $tokens[ $file ];
	}
	$token = null;
	if ( is_file( $file ) && is_readable( $file ) ) {
		$text = trim( (string) file_get_contents( $file, false, null, 0, 300 ) );
		if ( '0' !== $text && preg_match( '/^[A-Za-z0-9][A-Za-z0-9._~-]{0,255}$/', $text ) ) {
			$token = $text;
		}
	}
	$tokens[ $file ] = $token;
	return $token;
}

/**
 * Puts the token into the Optimole settings as they are read.
 *
 * @param mixed $settings The stored `optml_settings` value.
 * @return mixed
 */
function optiwatch_inject_token( $settings ) {
	$token = optiwatch_token();
	if ( null === $token || ! is_array( $settings ) ) {
		return $settings;
	}
	$settings['cache_buster_images'] = $token;
	return $settings;
}

add_filter( 'option_optml_settings', 'optiwatch_inject_token', 99 );
