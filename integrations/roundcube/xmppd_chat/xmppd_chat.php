<?php
/**
 * xmppd chat for Roundcube: the logged-in user's presence and status in the toolbar, presence
 * dots and click-to-chat on the addresses of the mail view and the address book, through
 * xmppd's widget.js (docs/roundcube.md, docs/widget.md).
 *
 * The plugin vouches for the user with a short-lived host-application token: an HS256 JWT
 * signed with the secret shared with xmppd ([auth.tokens.apps.<name>] in xmppd.toml,
 * docs/channels.md "Host-application tokens"). The browser fetches it from this plugin's
 * action and never sees the secret.
 */
class xmppd_chat extends rcube_plugin
{
    public $task = 'mail|addressbook|settings';

    public function init()
    {
        $this->load_config(); // the plugin's config.inc.php, when there is one (else the main config)
        $this->register_action('plugin.xmppd_chat.token', [$this, 'token']);
        $rcmail = rcmail::get_instance();
        if ($rcmail->output->type != 'html' || empty($rcmail->user->ID)) {
            return;
        }
        $url = rtrim((string) $rcmail->config->get('xmppd_chat_url'), '/');
        if ($url === '') {
            return;
        }
        $rcmail->output->set_env('xmppd_chat', [
            'server' => $url,
            'jid' => $this->jid(),
            'mailto' => true,
        ]);
        $this->include_script('xmppd_chat.js');
    }

    /** The user's JID: the login name, with xmppd_chat_domain when it has no domain. */
    private function jid()
    {
        $rcmail = rcmail::get_instance();
        $user = strtolower($rcmail->get_user_name());
        $domain = (string) $rcmail->config->get('xmppd_chat_domain');
        if (strpos($user, '@') === false && $domain !== '') {
            $user .= '@' . $domain;
        }
        return $user;
    }

    /** GET ?_task=mail&_action=plugin.xmppd_chat.token&_remote=1: {"token", "jid"} as JSON. */
    public function token()
    {
        $rcmail = rcmail::get_instance();
        $secret = (string) $rcmail->config->get('xmppd_chat_secret');
        header('Content-Type: application/json');
        header('Cache-Control: no-store');
        if (strlen($secret) < 32) {
            http_response_code(503);
            echo json_encode(['error' => 'xmppd_chat_secret is not set (at least 32 bytes)']);
            exit;
        }
        $now = time();
        $jid = $this->jid();
        $claims = [
            'sub' => $jid,
            'aud' => (string) ($rcmail->config->get('xmppd_chat_audience') ?: substr(strrchr($jid, '@'), 1)),
            'iat' => $now,
            'exp' => $now + (int) $rcmail->config->get('xmppd_chat_token_lifetime', 300),
            'jti' => bin2hex(random_bytes(16)),
            'name' => (string) $rcmail->user->get_username(),
        ];
        $identity = $rcmail->user->get_identity();
        if (!empty($identity['name'])) {
            $claims['name'] = $identity['name'];
        }
        $header = ['alg' => 'HS256', 'typ' => 'JWT'];
        $kid = (string) $rcmail->config->get('xmppd_chat_app', 'roundcube');
        if ($kid !== '') {
            $header['kid'] = $kid;
        }
        echo json_encode(['token' => self::jwt($header, $claims, $secret), 'jid' => $jid]);
        exit;
    }

    /** A compact JWS (RFC 7515) with HMAC-SHA256. */
    public static function jwt(array $header, array $claims, $secret)
    {
        $b64 = function ($data) {
            return rtrim(strtr(base64_encode($data), '+/', '-_'), '=');
        };
        $input = $b64(json_encode($header)) . '.' . $b64(json_encode($claims));
        return $input . '.' . $b64(hash_hmac('sha256', $input, $secret, true));
    }
}
